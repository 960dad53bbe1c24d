"""Command lines generated from config dataclasses, and the parser every command uses.

A config dataclass is the one place a setting, its default and its help live (Vidur's pattern):
each field carries :func:`flag` metadata, :func:`add_arguments` turns the fields into argparse
arguments, and :func:`from_namespace` builds the dataclass back from the parsed flags, so the
command line cannot drift from the API.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from typing import Any


class Parser(argparse.ArgumentParser):
    """One-line usage errors (exit 2), and no abbreviated flags.

    Abbreviations are refused so that a flag someone shortens today cannot silently
    become a different flag when a longer one is added (``--out`` for ``--output``).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"tpsim: error: {message} (see {self.prog} --help)\n")


def flag(help: str = "", *, group: str | None = None, choices=None, metavar: str | None = None,
         kind: str = "value", hidden: bool = False) -> dict:
    """Metadata for a config field that is also a command-line flag.

    ``kind``: ``value`` (typed by the field's annotation), ``switch`` (``--x`` / ``--no-x``) or
    ``store_true``.  ``hidden`` flags are accepted but not listed in ``--help``.
    """
    return {"flag": {"help": help, "group": group, "choices": choices, "metavar": metavar, "kind": kind,
                     "hidden": hidden}}


def _scalar_type(annotation) -> type:
    """``int | None`` -> int; ``str`` -> str (the argparse ``type=``)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing})  # noqa: S307 - our own annotations, from __future__
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


@functools.cache
def _hints(cls) -> dict:
    """The evaluated annotations of a config class (``get_type_hints`` compiles every string annotation anew: once
    per class is enough)."""
    return typing.get_type_hints(cls)


@functools.cache
def flag_fields(cls) -> tuple[tuple[str, dataclasses.Field, dict], ...]:
    """(name, field, nested dataclass or flag metadata) in declaration order (cached per class)."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "flag" in f.metadata:
            out.append((f.name, f, f.metadata["flag"]))
        elif f.metadata.get("flags_from"):
            out.append((f.name, f, {"nested": hints[f.name]}))
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser, cls, groups: dict | None = None) -> None:
    """Add one argument per flag field of ``cls`` (and of nested config dataclasses)."""
    groups = {} if groups is None else groups
    hints = _hints(cls)
    defaults = cls()
    for name, _, meta in flag_fields(cls):
        if "nested" in meta:
            add_arguments(parser, meta["nested"], groups)
            continue
        target = parser
        if meta["group"]:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        default = getattr(defaults, name)
        kwargs: dict[str, Any] = {"default": default, "dest": name,
                                  "help": argparse.SUPPRESS if meta["hidden"] else meta["help"]}
        if meta["kind"] == "switch":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta["kind"] == "store_true":
            kwargs["action"] = "store_true"
        else:
            kind = _scalar_type(hints[name])
            if kind is not str:
                kwargs["type"] = kind
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
        target.add_argument("--" + name.replace("_", "-"), **kwargs)


def from_namespace(cls, ns: argparse.Namespace, **objects):
    """``cls`` built from parsed flags (nested configs too); ``objects`` fill non-flag fields."""
    values = {}
    for name, _, meta in flag_fields(cls):
        values[name] = from_namespace(meta["nested"], ns) if "nested" in meta else getattr(ns, name)
    return cls(**values, **objects)


def flag_values(config) -> dict:
    """Every flag of ``config`` (nested ones flattened) by destination name, sorted."""
    out: dict = {}
    for name, _, meta in flag_fields(type(config)):
        value = getattr(config, name)
        if "nested" in meta:
            out.update(flag_values(value))
        else:
            out[name] = value
    return dict(sorted(out.items()))
