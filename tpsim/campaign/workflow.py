"""Which campaign a Snakemake invocation runs, read so that nothing in it runs as code.

``snakemake --config campaign=PATH`` is the way to choose a campaign: PATH (looked up in the working
directory, then in the repository) is read by :func:`tpsim.campaign.reading.load_file` -- safe YAML
within the campaign's size, depth and alias budgets -- and Snakemake never parses it.  Without it
the default campaign is read the same way.

``snakemake --configfile PATH`` still works, for compatibility, but Snakemake parses that file
itself before the workflow sees it: a YTE template (``__use_yte__: true``) runs its ``?``
expressions as Python, and aliased mappings expand in Snakemake's config merge before any bound
here applies (README, "Campaigns").  Other ``--config KEY=VALUE`` entries override the campaign's
keys either way, as Snakemake's own config merge would (nested mappings merge, anything else
replaces).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tpsim.campaign.checks import rel_path, resolve_path
from tpsim.campaign.reading import CampaignError, check_file_size, load_file, printable
from tpsim.campaign.runs import Campaign
from tpsim.campaign.spec import REPO, load_campaign

#: the campaign run when none is chosen
DEFAULT_CAMPAIGN = REPO / "configs" / "campaigns" / "tp_vs_linkbw.yaml"
#: the --config key naming the campaign file (not a key of the campaign itself)
CAMPAIGN_KEY = "campaign"
#: the key that makes Snakemake render a config file as a YTE template (Python in '?' expressions)
YTE_KEY = "__use_yte__"


def merge(doc: dict, overrides: dict) -> dict:
    """``overrides`` merged into ``doc`` in place, as Snakemake merges --config into a config file."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            merge(doc[key], value)
        else:
            doc[key] = value
    return doc


def campaign_file(chosen, roots: list[Path]) -> Path:
    """The file ``--config campaign=PATH`` names: from the working directory, else the repository."""
    if not isinstance(chosen, str) or not chosen:
        raise CampaignError(f"--config {CAMPAIGN_KEY}={printable(chosen)}: expected the path of a campaign file "
                            "(e.g. --config campaign=configs/campaigns/h100_nvlink.yaml)")
    found = resolve_path(chosen, roots)
    return Path(found if found is not None else chosen)


def choose_campaign(config: dict, configfiles=None, *, default: Path = DEFAULT_CAMPAIGN,
                    roots: list[Path] | None = None) -> tuple[Campaign, str]:
    """(the campaign, where it came from) for Snakemake's ``config`` and ``--configfile`` list.

    ``config`` holds ``campaign`` (from ``--config campaign=PATH``) and any other ``--config``
    entries; with ``--configfile``, Snakemake has already merged the files and those entries.
    """
    roots = roots if roots is not None else [Path("."), REPO]
    overrides = dict(config)
    chosen = overrides.pop(CAMPAIGN_KEY, None)
    if configfiles:
        if chosen is not None:
            raise CampaignError(f"--config {CAMPAIGN_KEY}=... and --configfile both name a campaign; give one "
                                f"(--config {CAMPAIGN_KEY}=PATH is read safely: README, Campaigns)")
        source = ", ".join(rel_path(Path(f)) for f in configfiles)
        for f in configfiles:
            check_file_size(f)  # Snakemake has parsed it already: at least say when it is too large
        return load_campaign(overrides, source=source, roots=roots), source
    path = default if chosen is None else campaign_file(chosen, roots)
    source = rel_path(path) if path.exists() else str(path)
    doc = load_file(path)
    if YTE_KEY in doc:
        raise CampaignError(f"campaign {printable(source)}: {YTE_KEY}: campaigns are plain YAML, not YTE templates "
                            "(their '?' expressions would run as Python); write the values out")
    return load_campaign(merge(doc, overrides), source=source, roots=roots), source


def tpsim_location_warning(workflow_repo: Path) -> str | None:
    """A warning when the ``tpsim`` this interpreter imports (the one the jobs run) is not the
    checkout the workflow comes from, else None."""
    import tpsim

    found = Path(tpsim.__file__).resolve().parent.parent
    if found == Path(workflow_repo).resolve():
        return None
    return (f"tpsim: warning: this workflow is {workflow_repo}'s, but its jobs run the tpsim installed from "
            f"{found}; install this checkout (pip install -e '{workflow_repo}[workflow]') or put it on PYTHONPATH")


#: set once the warnings are printed: the processes Snakemake starts that load the workflow again
#: (``run:`` jobs, cluster jobs) inherit it and stay quiet
WARNED = "TPSIM_CAMPAIGN_WARNED"


def warn(*messages: str | None) -> None:
    """Print each message on stderr, once per Snakemake invocation (see :data:`WARNED`)."""
    import os

    if os.environ.get(WARNED):
        return
    for message in messages:
        if message:
            print(message, file=sys.stderr)


def warned_already() -> bool:
    """Whether this invocation printed its warnings already (this process was started by it)."""
    import os

    return bool(os.environ.get(WARNED))


def warned() -> None:
    """Mark the warnings of this invocation printed (for the processes it starts)."""
    import os

    os.environ[WARNED] = "1"


def report_path(argv: list[str]) -> str | None:
    """The file ``snakemake --report [FILE]`` writes (Snakemake's default ``report.html``), or None
    when this invocation writes no report."""
    for i, arg in enumerate(argv):
        if arg == "--report":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            return nxt if nxt and not nxt.startswith("-") else "report.html"
        if arg.startswith("--report="):
            return arg.split("=", 1)[1]
    return None


def check_report_path(path: str | None, camp: Campaign, source: str) -> None:
    """A report written into another campaign's results folder (``results/<other>/...``) is refused:
    it would describe this campaign in that one's place."""
    if path is None:
        return
    parts = Path(path).parts
    if "results" not in parts:
        return
    i = len(parts) - 1 - parts[::-1].index("results")
    if i + 2 <= len(parts) - 1 and parts[i + 1] != camp.name:
        raise CampaignError(
            f"--report {printable(path)}: that is campaign {printable(parts[i + 1])}'s folder, but this invocation "
            f"reports campaign {camp.name} ({source}); write it to {camp.results}/report.html, or choose that "
            f"campaign with --config {CAMPAIGN_KEY}=configs/campaigns/{printable(parts[i + 1])}.yaml")


def placeholder_problems(default_resources: list[str], set_resources: dict) -> list[str]:
    """Workflow-profile resources still holding the template's placeholder (``CHANGE_ME``), e.g. an
    unedited ``workflow/profiles/slurm/config.yaml``: refused when the workflow loads, before any
    job is submitted with them."""
    from tpsim.campaign.form import PLACEHOLDER

    out = []
    for item in default_resources or []:
        if PLACEHOLDER in str(item):
            name = str(item).split("=", 1)[0]
            out.append(f"workflow profile: default-resources {printable(str(item))} is a placeholder; set {name} in "
                       f"the profile (workflow/profiles/slurm/config.yaml) or pass --default-resources {name}=VALUE")
    for rule, resources in (set_resources or {}).items():
        for name, value in (resources or {}).items():
            if PLACEHOLDER in str(value):
                out.append(f"workflow profile: set-resources {rule}:{name}={printable(str(value))} is a placeholder; "
                           "set it in the profile or pass --set-resources")
    return out
