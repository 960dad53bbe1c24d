"""Loading a campaign: a YAML matrix of ``tpsim run``s, validated and expanded into runs.

A campaign YAML (``configs/campaigns/*.yaml``) names a base cluster config, a workload and a
``matrix`` of parameters; every combination (minus ``exclude`` rules) is one ``tpsim run``.  The
workflow loads it at parse time (``workflow/rules/common.smk``, through
:mod:`tpsim.campaign.workflow`); it needs only the standard library, PyYAML, jsonschema (a
Snakemake dependency) and ``tpsim.config.catalog``.

Loading goes from cheap to costly, so that no hostile campaign costs much before it is refused:
the document's size once YAML aliases expand (:mod:`~tpsim.campaign.reading`), the matrix size
against ``limits.max_runs``, then its form (:mod:`~tpsim.campaign.form`) beside the checks of what
it names (files, catalog entries, exclude rules, flags: :mod:`~tpsim.campaign.checks`), and only
then the expansion into runs (:mod:`~tpsim.campaign.runs`), whose ids are built by
:mod:`~tpsim.campaign.run_ids`.
"""

from __future__ import annotations

from pathlib import Path

from tpsim.campaign import form
from tpsim.campaign.checks import Checks
from tpsim.campaign.reading import CampaignError, check_structure, load_file, printable
from tpsim.campaign.runs import Campaign, Run, expand
from tpsim.config.catalog import PACKAGE_ROOT

#: the checkout: campaign paths not found in the working folder are looked up here
REPO = PACKAGE_ROOT
SCHEMA = form.SCHEMA
MAX_PROBLEMS = 20  # a campaign with more problems shows the first ones and a count

__all__ = ["Campaign", "CampaignError", "Run", "load_campaign", "load_campaign_file"]


def plain(value):
    """A private copy as JSON types: mapping keys as text, dates and other YAML scalars as text
    (NaN and infinities stay floats; the schema refuses them)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _report(prefix: str, problems: list[str]) -> CampaignError:
    lines = [f"{prefix}: {p}" for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"{prefix}: ... and {len(problems) - MAX_PROBLEMS} more problems")
    return CampaignError("\n".join(lines))


def load_campaign(doc: dict, *, source: str = "<config>", roots: list[Path] | None = None,
                  schema_path: Path = SCHEMA) -> Campaign:
    """Validate ``doc`` and expand it into runs.  Raises CampaignError naming every problem."""
    roots = roots if roots is not None else [Path("."), REPO]
    prefix = f"campaign {printable(str(source))}"
    if not isinstance(doc, dict) or not doc:
        raise CampaignError(f"{prefix}: empty; expected keys name, cluster, workload, matrix")
    check_structure(doc, prefix.removeprefix("campaign "))  # before anything walks it
    doc = plain(doc)  # a private, JSON-only copy
    form.check_matrix_size(doc, prefix)  # before anything walks the matrix
    # Schema errors and the checks beyond the schema are reported together.  A check beyond the
    # schema runs on every part the schema accepted (a bad exclude rule does not hide the others, a
    # bad tp_size does not hide an unknown model); only the expansion into runs needs all of it.
    schema = form.form_problems(doc, schema_path)
    doc.setdefault("perf_model", "auto")
    doc.setdefault("requests_csv", False)
    doc.setdefault("tpsim_args", [])
    doc.setdefault("exclude", [])
    checks = Checks(doc, [path for path, _ in schema], roots)
    problems = [msg for _, msg in schema] + checks.run_all()
    if problems:
        raise _report(prefix, problems)
    return expand(doc, checks, source, prefix)


def load_campaign_file(path, **kw) -> Campaign:
    """A campaign file, read within the bounds of :mod:`~tpsim.campaign.reading`, loaded by
    :func:`load_campaign`."""
    return load_campaign(load_file(path), source=str(path), **kw)
