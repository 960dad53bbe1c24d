"""A campaign file read within bounds: its size, its nesting, and its size once YAML aliases expand.

A campaign is a few hundred bytes nested four levels deep.  A hostile or broken one must not cost
minutes or gigabytes before it is refused: a "billion laughs" file (anchors whose aliases nest
inside each other) is small on disk and small once loaded (PyYAML shares aliased nodes), but every
walk over it -- JSON Schema, a deep copy, Snakemake's config merge -- visits each shared node once per
path to it.  So before anything walks a campaign, :func:`check_structure` counts the values it would
visit (each shared one once per reference, in time linear in the distinct values) and refuses more
than :func:`max_nodes`; deeper nesting than :data:`MAX_DEPTH` and a value that contains itself are
refused as well.  Limits (environment variables, since they apply before the file is read):

* ``TPSIM_CAMPAIGN_MAX_BYTES``: file size, default 1 MiB;
* ``TPSIM_CAMPAIGN_MAX_NODES``: values once aliases expand, default 100,000.
"""

from __future__ import annotations

import os

MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_NODES = 100_000


class CampaignError(ValueError):
    """A campaign that cannot run; the message names the file and the offending key."""


def printable(text, limit: int = 200) -> str:
    """Text as written when it is printable, else with its unprintable characters escaped (one line);
    longer than ``limit`` characters, its middle is cut (an error line stays readable)."""
    text = str(text)
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit // 2] + "..." + text[-limit // 2:]


def _limit(env: str, default: int) -> int:
    text = os.environ.get(env, "")
    try:
        value = int(text) if text else default
    except ValueError:
        raise CampaignError(f"{env}={text!r}: expected a positive whole number") from None
    if value < 1:
        raise CampaignError(f"{env}={text!r}: expected a positive whole number")
    return value


def max_bytes() -> int:
    return _limit("TPSIM_CAMPAIGN_MAX_BYTES", DEFAULT_MAX_BYTES)


def max_nodes() -> int:
    return _limit("TPSIM_CAMPAIGN_MAX_NODES", DEFAULT_MAX_NODES)


def check_size(path, size: int) -> None:
    limit = max_bytes()
    if size > limit:
        raise CampaignError(f"campaign {printable(path)}: {size:,} bytes, more than the limit of {limit:,} (a campaign "
                            "is a few hundred bytes; raise it with the environment variable TPSIM_CAMPAIGN_MAX_BYTES)")


def check_file_size(path) -> None:
    """Refuse a campaign file larger than the limit (or not a regular file) before anyone parses it again."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CampaignError(f"campaign {printable(path)}: cannot read it ({exc.strerror})") from None
    if not os.path.isfile(path):
        raise CampaignError(f"campaign {printable(path)}: not a regular file")
    check_size(path, st.st_size)


def read_text(path) -> str:
    """The file's text: at most the size limit, UTF-8 (a bad byte is named by line)."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes() + 1)
    except FileNotFoundError:
        raise CampaignError(f"campaign {printable(path)}: no such file") from None
    except OSError as exc:
        raise CampaignError(f"campaign {printable(path)}: cannot read it ({exc.strerror or exc})") from None
    check_size(path, len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CampaignError(f"campaign {printable(path)}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); "
                            "save the file as UTF-8") from None


def _loader():
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_depth(text: str, path) -> None:
    """Nesting deeper than MAX_DEPTH, from the event stream (composing such a file recurses, and
    libyaml's composer then crashes the interpreter)."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=_loader()):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise CampaignError(f"campaign {printable(path)}:{line}: nested more than {MAX_DEPTH} levels "
                                    "deep")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def load_file(path) -> dict:
    """A campaign file as plain data, within the bounds above; CampaignError otherwise."""
    import yaml

    text = read_text(path)
    try:
        _check_depth(text, path)
        doc = yaml.load(text, Loader=_loader())
    except CampaignError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CampaignError(f"campaign {printable(path)}{line}: malformed YAML ({printable(problem)})") from None
    except ValueError as exc:  # an integer past Python's digit limit, a bad timestamp, ...
        problem = printable(str(exc).splitlines()[0][:200])
        raise CampaignError(f"campaign {printable(path)}: malformed YAML ({problem})") from None
    if not isinstance(doc, dict):
        raise CampaignError(f"campaign {printable(path)}: expected a mapping of keys (name, cluster, workload, "
                            f"matrix), got {type(doc).__name__}")
    return doc


def check_structure(doc, source) -> None:
    """Refuse a document that holds itself, nests deeper than MAX_DEPTH or expands past the node
    limit; linear in the distinct values, whatever their aliases."""
    limit = max_nodes()
    size: dict[int, int] = {}  # id -> values in the subtree, each reference counted
    depth: dict[int, int] = {}
    open_ids: set[int] = set()
    stack = [(doc, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_ids.discard(key)
            size[key] = 1 + sum(size.get(id(c), 1) for c in children)
            depth[key] = 1 + max((depth.get(id(c), 0) for c in children), default=0)
            if size[key] > limit:
                raise CampaignError(f"campaign {printable(source)}: more than {limit:,} values once its YAML aliases "
                                    "are expanded (a campaign has a few hundred; raise the limit with the environment "
                                    "variable TPSIM_CAMPAIGN_MAX_NODES)")
            if depth[key] > MAX_DEPTH:
                raise CampaignError(f"campaign {printable(source)}: nested more than {MAX_DEPTH} levels deep")
            continue
        if key in size or not children:
            continue
        if key in open_ids:
            raise CampaignError(f"campaign {printable(source)}: a YAML alias refers to a value that contains it "
                                "(a loop)")
        open_ids.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node) -> list:
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    if isinstance(node, (list, tuple)):
        return list(node)
    return []
