"""The GPU-to-GPU link of each run: from the matrix, from the GPU's catalog entry, or from the base
cluster config -- and a warning when a run asks for a faster link than its GPU has.

A hardware sweep (``matrix.hardware``) gives each GPU its catalogued interconnect
(``spec.interconnect.link_bw_gbps`` / ``link_latency_ns`` in ``configs/hardware/<GPU>.yaml``) unless
``link_bw`` / ``link_latency`` are in the matrix: an A100 then runs on its NVLink 3 (300 GB/s, 5 us),
not on the base config's link.  Without ``matrix.hardware`` the base config's link stays, as before.
A run whose ``link_bw`` is above its GPU's catalogued bandwidth, or whose ``link_latency`` is below
the catalogued latency, is a what-if on a faster interconnect than the GPU has: the campaign says so
when it loads (one line per GPU and value).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tpsim.campaign.reading import CampaignError, printable
from tpsim.campaign.run_ids import canonical_number, fmt_value
from tpsim.errors import InputError


@dataclass(frozen=True)
class CatalogLink:
    """A GPU's catalogued interconnect."""

    link_bw_gbps: float
    link_latency_ns: float
    kind: str


@functools.cache
def catalog_link(hardware_yaml: str) -> CatalogLink:
    """The interconnect of a hardware catalog entry, read by tpsim's own parser."""
    spec = hardware_spec(hardware_yaml)
    return CatalogLink(canonical_number(spec.link_bw_gbps), canonical_number(spec.link_latency_ns),
                       spec.interconnect)


def hardware_spec(hardware_yaml: str):
    """The parsed :class:`~tpsim.config.hardware.HardwareSpec` of a catalog entry."""
    from pathlib import Path

    from tpsim.config.hardware import parse_hardware
    from tpsim.io.files import decode_utf8, parse_yaml, read_bytes, show_path

    where = show_path(str(hardware_yaml))
    try:
        doc = parse_yaml(decode_utf8(read_bytes(hardware_yaml, "hardware entry", "--hardware"), where), where)
        return parse_hardware(doc, Path(hardware_yaml).stem, str(hardware_yaml))
    except InputError as exc:
        raise CampaignError(f"hardware: {printable(str(exc))}") from None


def run_link(values: dict, base: dict, hardware: str, hardware_path: str, sweep: bool) -> tuple:
    """(link_bw, link_latency, source) of one run: the matrix's values, else the GPU's catalogued
    link in a hardware sweep (``sweep``), else the base config's."""
    from tpsim.campaign.checks import scalar

    if sweep and ("link_bw" not in values or "link_latency" not in values):
        link = catalog_link(hardware_path)
        bw = values.get("link_bw", link.link_bw_gbps)
        lat = values.get("link_latency", link.link_latency_ns)
    else:
        bw = values.get("link_bw", canonical_number(scalar(base.get("link_bw"))))
        lat = values.get("link_latency", canonical_number(scalar(base.get("link_latency"))))
    sources = [("matrix" if key in values else "catalog" if sweep else "base config")
               for key in ("link_bw", "link_latency")]
    source = sources[0] if sources[0] == sources[1] else f"link_bw: {sources[0]}, link_latency: {sources[1]}"
    return bw, lat, source


def faster_than_hardware(hardware_path: str, link_bw, link_latency) -> list[tuple[str, object]]:
    """(key, value) of what a run's link asks beyond its GPU's catalogued interconnect: a link_bw
    above its bandwidth, a link_latency below its latency (empty when nothing)."""
    link = catalog_link(hardware_path)
    out = []
    if link_bw is not None and link_bw > link.link_bw_gbps:
        out.append(("link_bw", link_bw))
    if link_latency is not None and link_latency < link.link_latency_ns:
        out.append(("link_latency", link_latency))
    return out


def warnings(runs, hardware_paths: dict, prefix: str) -> list[str]:
    """One line per GPU and key whose runs ask for a faster link than the GPU's catalogued one."""
    asked: dict = {}  # (hardware, key) -> {value: runs}
    for run in runs:
        p = run.params
        for key, value in faster_than_hardware(hardware_paths[p["hardware"]], p["link_bw"], p["link_latency"]):
            values = asked.setdefault((p["hardware"], key), {})
            values[value] = values.get(value, 0) + 1
    out = []
    for (hardware, key), values in asked.items():
        link = catalog_link(hardware_paths[hardware])
        shown = ", ".join(fmt_value(v) for v in sorted(values))
        if key == "link_bw":
            what = (f"link_bw {shown} GB/s is more than {hardware}'s catalogued {link.kind} "
                    f"({fmt_value(link.link_bw_gbps)} GB/s per direction)")
        else:
            what = (f"link_latency {shown} ns is below {hardware}'s catalogued {link.kind} "
                    f"({fmt_value(link.link_latency_ns)} ns)")
        n = sum(values.values())
        out.append(f"{prefix}: warning: {what}: {n} run{'s are' if n > 1 else ' is a'} what-if{'s' if n > 1 else ''} "
                   "on a faster link than the GPU has")
    return out
