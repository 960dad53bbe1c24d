"""Measured profile bundles: the on-disk format, its reader and its writer.

A bundle holds one GPU's measured operation times for one model, dtype and
tensor-parallel degree.  Bundles live in LLMServingSim's layout::

    <root>/<HARDWARE>/<org>/<model>/<variant>/tp<N>/

where ``variant`` is the short weight dtype (``bf16``, ``fp16``, ``fp32``,
``fp8``) followed by ``-kvfp8`` when the KV cache is fp8.  Two formats are
read; :func:`read_bundle` tells them apart by ``tp<N>/meta.yaml``.

tpsim format (version 1, written by ``tpsim profile``)
------------------------------------------------------
Everything a bundle needs sits in its ``tp<N>/`` folder::

    meta.yaml          format: tpsim, format_version: 1, timing: wall, and provenance
    dense.csv          layer,tokens,time_us,graph_time_us
    per_sequence.csv   layer,sequences,time_us,graph_time_us
    attention.csv      prefill_chunk,kv_prefill,n_decode,kv_decode,time_us,graph_time_us

* ``dense.csv``: operations whose cost depends on the number of tokens in the
  step, timed at the per-GPU shapes of tensor parallelism N (heads, KV heads
  (one replicated head when kv_heads < N), intermediate size and vocabulary
  divided by N).  Per decoder layer: ``layernorm`` (runs twice per layer: input
  and post-attention; residual add included), ``qk_norm`` (Qwen3 only),
  ``qkv_proj``, ``rotary_emb``, ``o_proj``, ``gate_up_proj``, ``act_fn``
  (SiLU x mul), ``down_proj``; once per step: ``embedding`` (vocab-parallel
  lookup), ``final_layernorm``.
* ``per_sequence.csv``: ``lm_head`` (GEMM onto the local vocabulary shard) and
  ``sampler`` (fp32 logits over the full vocabulary, greedy argmax), by the
  number of sequences whose logits are computed.
* ``attention.csv``: one attention call of one decoder layer for a batch of one
  prefill chunk (``prefill_chunk`` new tokens after ``kv_prefill`` cached ones;
  0 = none) plus ``n_decode`` decoding sequences that each attend to
  ``kv_decode`` tokens (their new token included).  The time includes writing
  the step's new K/V into the paged cache, as vLLM's ``Attention`` layer does.
* ``time_us``: microseconds per call on one GPU when launched eagerly (one op
  at a time from Python), measured as *wall* time: CUDA events (or
  ``time.perf_counter`` on CPU) around ``inner`` back-to-back calls divided by
  ``inner``, median over ``repeats`` after ``warmup``; launch gaps are included.
* ``graph_time_us``: the same, replayed from a CUDA graph holding ``inner``
  calls (what serving engines do for decode-sized batches); empty where not
  measured (on CPU, above ``graph.max_batch``, and for attention rows with a
  prefill chunk).
* Rows are keyed by their integer axes; a repeated key keeps the last row.

``meta.yaml`` (tpsim) keys: ``format``, ``format_version``, ``timing``
(``wall``), ``hardware``, ``model``, ``dtype``, ``kv_cache_dtype``,
``variant``, ``tp``, ``device``, ``gpu``, ``driver``, ``cuda``, ``torch``,
``python``, ``date``, ``shard`` (the per-GPU shapes timed), ``grid`` (the axis
values), ``warmup``, ``repeats``, ``inner``, ``graph`` ({enabled, max_batch}),
``l2_flush_bytes``, ``kernels`` (what each op runs, in words).

LLMServingSim format (read only)
--------------------------------
``tp<N>/dense.csv`` (``layer,tokens,time_us``), ``tp<N>/per_sequence.csv``
(``layer,sequences,time_us``), ``tp<N>/attention.csv``
(``prefill_chunk,kv_prefill,n_decode,kv_decode,time_us``), optional
``tp<N>/skew.csv`` (raw shots, not read) and ``tp<N>/skew_fit.csv``
(``pc,n_label,skew_rate_label,kv_big_label,kp_label,alpha,n_samples``), and
optional ``tp<N>/moe.csv`` (``tokens,activated_experts,time_us``: the MoE block,
:mod:`tpsim.perf.moe_table`), and ``meta.yaml`` one level up (in the variant folder) carrying ``gpu``,
``profiled_at``, ``skew_fit.bucket_axes`` and ``skew_fit.per_tp[N].alpha_default``.
Its times are *kernel* times: vLLM's layer-wise profiler sums the CUDA kernel
durations inside each module, so launch gaps are not in them (the latency
model adds the hardware catalog's per-kernel overhead for that reason).

Values are kept in ns as floats (``time_us * 1000``); nothing here imports
numpy, pandas or torch.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

from tpsim.errors import InputError
from tpsim.perf.bundle_csv import (  # the shared tables and sources (profile.py imports them from here)
    EXTRAPOLATED,
    INTERPOLATED,
    MEASURED,
    Table1D,
    _int_cell,
    _read_csv,
    _time_cell,
    worst,
)
from tpsim.perf.bundle_paths import bundle_dir, locate, variant_name  # noqa: F401 (re-exported)

FORMAT_NAME = "tpsim"
FORMAT_VERSION = 1

DENSE_COLUMNS = ("layer", "tokens", "time_us", "graph_time_us")
PER_SEQUENCE_COLUMNS = ("layer", "sequences", "time_us", "graph_time_us")
ATTENTION_COLUMNS = ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us", "graph_time_us")
SKEW_FIT_COLUMNS = ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "alpha")

@dataclass
class AttentionSlice:
    """One (prefill_chunk, n_decode) slice: a kd-table per profiled kv_prefill."""

    kps: list[int]
    rows: list[Table1D]

    def _bracket(self, kp: float) -> tuple[int, int, str]:
        kps = self.kps
        i = bisect_left(kps, kp)
        n = len(kps)
        if i < n and kps[i] == kp:
            return i, i, MEASURED
        if i == 0 or n == 1:
            return 0, 0, EXTRAPOLATED
        if i == n:
            return n - 2, n - 1, EXTRAPOLATED
        return i - 1, i, INTERPOLATED

    def value(self, kp: float, kd: float) -> float:
        lo, hi, src = self._bracket(kp)
        v0 = self.rows[lo].value(kd)
        if lo == hi:
            return v0
        v1 = self.rows[hi].value(kd)
        if src == EXTRAPOLATED and v1 < v0:
            v1 = v0  # never extrapolate downwards
        return v0 + (kp - self.kps[lo]) / (self.kps[hi] - self.kps[lo]) * (v1 - v0)

    def source(self, kp: float, kd: float) -> str:
        lo, hi, src = self._bracket(kp)
        return worst(src, self.rows[lo].source(kd), self.rows[hi].source(kd))

    def lookup(self, kp: float, kd: float) -> tuple[float, str]:
        return self.value(kp, kd), self.source(kp, kd)


@dataclass
class AttentionTable:
    """The 4-D table: slices keyed by (prefill_chunk, n_decode)."""

    slices: dict[tuple[int, int], AttentionSlice]
    pcs: list[int] = field(default_factory=list)  # prefill_chunk values of prefill-only slices
    nds: list[int] = field(default_factory=list)  # n_decode values of decode-only slices
    mixed_pcs: list[int] = field(default_factory=list)  # axes of the slices with both
    mixed_nds: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.pcs = sorted({pc for pc, nd in self.slices if pc > 0 and nd == 0})
        self.nds = sorted({nd for pc, nd in self.slices if nd > 0 and pc == 0})
        self.mixed_pcs = sorted({pc for pc, nd in self.slices if pc > 0 and nd > 0})
        self.mixed_nds = sorted({nd for pc, nd in self.slices if pc > 0 and nd > 0})
        self._nearest: dict[tuple[int, int], tuple[int, int] | None] = {}

    @property
    def has_mixed(self) -> bool:
        return any(pc > 0 and nd > 0 for pc, nd in self.slices)

    def has_regime(self, prefill: bool, decode: bool) -> bool:
        return any((pc > 0) == prefill and (nd > 0) == decode for pc, nd in self.slices)

    @staticmethod
    def bracket(axis: list[int], x: float) -> tuple[int, int, float, str]:
        """(lower key, upper key, fraction, source) of ``x`` on a sorted positive axis."""
        i = bisect_left(axis, x)
        n = len(axis)
        if i < n and axis[i] == x:
            return axis[i], axis[i], 0.0, MEASURED
        if i == 0 or n == 1:
            return axis[0], axis[0], 0.0, EXTRAPOLATED  # below the grid: clamp
        if i == n:
            return axis[-2], axis[-1], (x - axis[-2]) / (axis[-1] - axis[-2]), EXTRAPOLATED
        return axis[i - 1], axis[i], (x - axis[i - 1]) / (axis[i] - axis[i - 1]), INTERPOLATED

    def nearest(self, pc: int, nd: int) -> tuple[int, int] | None:
        """The profiled (pc, nd) pair of the same regime closest to (pc, nd) in log2 distance."""
        key = (pc, nd)
        if key not in self._nearest:
            best, best_d = None, float("inf")
            lp, ln = math.log2(pc + 1), math.log2(nd + 1)
            for p, d in self.slices:
                if (p > 0) != (pc > 0) or (d > 0) != (nd > 0):
                    continue
                dist = (math.log2(p + 1) - lp) ** 2 + (math.log2(d + 1) - ln) ** 2
                if dist < best_d:
                    best, best_d = (p, d), dist
            self._nearest[key] = best
        return self._nearest[key]

    def corner(self, pc: int, nd: int, kp: float, kd: float) -> tuple[float, str]:
        s = self.slices.get((pc, nd))
        if s is not None:
            return s.lookup(kp, kd)
        near = self.nearest(pc, nd)
        if near is None:
            raise KeyError((pc, nd))
        v, _ = self.slices[near].lookup(kp, kd)
        return v, EXTRAPOLATED

    def lookup(self, pc: int, kp: float, nd: int, kd: float) -> tuple[float, str]:
        """Time (ns) of one attention call: one prefill chunk of ``pc`` tokens after ``kp`` cached ones plus
        ``nd`` decodes attending to ``kd`` tokens each.

        Bilinear over (pc, nd) between the bracketing profiled slices, and inside each slice bilinear over
        (kp, kd) as :class:`AttentionSlice` does.  Prefill-only, decode-only and mixed batches are three
        regimes, each bracketed on its own axes (a positive query never interpolates towards "no prefill"
        or "no decodes").  A slice missing from a regime's grid is replaced by the nearest profiled one of
        the same regime (labelled extrapolated); a mixed batch on a bundle with no mixed slices is the sum
        of its prefill and decode parts (extrapolated).
        """
        if pc <= 0 and nd <= 0:
            return 0.0, MEASURED
        if pc > 0 and nd > 0:
            if not self.has_mixed:
                a, _ = self.lookup(pc, kp, 0, 0)
                b, _ = self.lookup(0, 0, nd, kd)
                return a + b, EXTRAPOLATED
            pcs, nds = self.mixed_pcs, self.mixed_nds
        else:
            pcs, nds = self.pcs, self.nds
        p0, p1, tp_, sp = (0, 0, 0.0, MEASURED) if pc <= 0 else self.bracket(pcs, pc)
        n0, n1, tn, sn = (0, 0, 0.0, MEASURED) if nd <= 0 else self.bracket(nds, nd)
        c00, s00 = self.corner(p0, n0, kp, kd)
        if n1 != n0:
            c01, s01 = self.corner(p0, n1, kp, kd)
            v0 = c00 + tn * (c01 - c00)
            s0 = worst(s00, s01)
        else:
            v0, s0 = c00, s00
        if p1 == p0:
            return v0, worst(s0, sp, sn)
        c10, s10 = self.corner(p1, n0, kp, kd)
        if n1 != n0:
            c11, s11 = self.corner(p1, n1, kp, kd)
            v1 = c10 + tn * (c11 - c10)
            s1 = worst(s10, s11)
        else:
            v1, s1 = c10, s10
        return v0 + tp_ * (v1 - v0), worst(s0, s1, sp, sn)

    def num_rows(self) -> int:
        return sum(len(r.keys) for s in self.slices.values() for r in s.rows)


@dataclass
class SkewFit:
    """LLMServingSim's decode-skew correction: alpha by bucket, with a pooled default."""

    alphas: dict[str, float]
    alpha_default: float
    axes: dict  # n_bins/n_labels, skew_rate_bins/labels, kv_big_bins/labels, kp_bins/labels

    def __post_init__(self):
        self._memo: dict[tuple, float] = {}

    @staticmethod
    def label_index(bins, labels, value) -> int:
        """Bucket ``(bins[i], bins[i+1]]`` holding ``value`` (inclusive on the right, as LLMServingSim)."""
        i = bisect_left(bins, value, 1) - 1
        return i if i < len(labels) else len(labels) - 1

    def alpha(self, pc: int, n: int, skew_rate: float, kv_big: int, kp: int) -> float:
        a = self.axes
        rate = 0.0 if skew_rate < 0.0 else (1.0 if skew_rate > 1.0 else skew_rate)
        li = self.label_index
        return self.alpha_at((pc, li(a["n_bins"], a["n_labels"], n),
                              li(a["skew_rate_bins"], a["skew_rate_labels"], rate),
                              li(a["kv_big_bins"], a["kv_big_labels"], kv_big), li(a["kp_bins"], a["kp_labels"], kp)))

    def alpha_at(self, idx: tuple[int, int, int, int, int]) -> float:
        """Alpha for (pc, n bucket, skew-rate bucket, kv_big bucket, kv_prefill bucket) indices."""
        alpha = self._memo.get(idx)
        if alpha is None:
            a = self.axes
            key = "|".join((f"pc={idx[0]}", a["n_labels"][idx[1]], a["skew_rate_labels"][idx[2]],
                            a["kv_big_labels"][idx[3]], a["kp_labels"][idx[4]]))
            alpha = self._memo[idx] = self.alphas.get(key, self.alpha_default)
        return alpha


#: LLMServingSim's bucket axes when its meta.yaml predates ``skew_fit.bucket_axes``
DEFAULT_SKEW_AXES = {
    "n_bins": [0, 2, 4, 8, 16, 32, 64, 128, 1_000_000],
    "n_labels": ["n<=2", "n<=4", "n<=8", "n<=16", "n<=32", "n<=64", "n<=128", "n>128"],
    "kv_big_bins": [0, 1024, 4096, 16384, 1_000_000_000],
    "kv_big_labels": ["kvB<=1k", "kvB<=4k", "kvB<=16k", "kvB>16k"],
    "skew_rate_bins": [-0.01, 0.05, 0.15, 0.40, 0.70, 1.01],
    "skew_rate_labels": ["sr<=5%", "sr<=15%", "sr<=40%", "sr<=70%", "sr>70%"],
    "kp_bins": [-1, 0, 2048, 1_000_000_000],
    "kp_labels": ["kp=0", "kp<=2k", "kp>2k"],
}


@dataclass
class Bundle:
    """One ``tp<N>/`` folder, parsed."""

    path: Path
    format: str  # "tpsim" | "llmservingsim"
    tp: int
    timing: str  # "wall" (launch gaps included) | "kernel" (sum of kernel durations)
    meta: dict
    dense: dict[str, Table1D]
    per_sequence: dict[str, Table1D]
    attention: AttentionTable | None
    dense_graph: dict[str, Table1D] = field(default_factory=dict)
    per_sequence_graph: dict[str, Table1D] = field(default_factory=dict)
    attention_graph: AttentionTable | None = None
    skew: SkewFit | None = None
    hardware: str = ""
    model: str = ""
    variant: str = ""
    moe: object | None = None  # LLMServingSim's moe.csv (tpsim.perf.moe_table.MoETable), where present

    def describe(self) -> dict:
        m = self.meta
        return {
            "source": str(self.path),
            "format": self.format,
            "timing": self.timing,
            "tp": self.tp,
            "hardware": self.hardware,
            "model": self.model,
            "variant": self.variant,
            "gpu": m.get("gpu"),
            "date": m.get("date", m.get("profiled_at")),
            "profiler": m.get("tool") or (f"LLMServingSim profiler {m.get('profiler_version')}, vLLM "
                                          f"{m.get('vllm_version')}" if self.format == "llmservingsim" else None),
            "dense_ops": sorted(self.dense),
            "per_sequence_ops": sorted(self.per_sequence),
            "attention_rows": self.attention.num_rows() if self.attention else 0,
            "graph_timings": bool(self.dense_graph or self.per_sequence_graph or self.attention_graph),
            "skew_correction": self.skew is not None,
            **({"moe_rows": self.moe.num_rows} if self.moe is not None else {}),
        }


# --------------------------------------------------------------------------- reading
def _tables_1d(path: Path, key_col: str, graph: bool) -> tuple[dict[str, Table1D], dict[str, Table1D]]:
    optional = ("graph_time_us",) if graph else ()
    rows = _read_csv(path, ("layer", key_col, "time_us"), optional)
    eager: dict[str, dict[int, float]] = {}
    graphs: dict[str, dict[int, float]] = {}
    for line, r in rows:
        layer = r["layer"]
        if not layer:
            raise InputError(f"{path}:{line}: empty layer name; fix or delete the row")
        key = _int_cell(path, line, key_col, r[key_col])
        if key < 1:
            raise InputError(f"{path}:{line}: column {key_col} must be >= 1, got {key}")
        eager.setdefault(layer, {})[key] = _time_cell(path, line, "time_us", r["time_us"], False)
        g = _time_cell(path, line, "graph_time_us", r.get("graph_time_us", ""), True)
        if g is not None:
            graphs.setdefault(layer, {})[key] = g
    if not eager:
        raise InputError(f"{path}: no rows; the bundle is incomplete (re-run `tpsim profile`)")

    def build(d):
        return {layer: Table1D(sorted(v), [v[k] for k in sorted(v)]) for layer, v in d.items()}

    return build(eager), build(graphs)


def _attention_tables(path: Path, graph: bool) -> tuple[AttentionTable, AttentionTable | None]:
    optional = ("graph_time_us",) if graph else ()
    rows = _read_csv(path, ATTENTION_COLUMNS[:5], optional)
    eager: dict[tuple[int, int], dict[int, dict[int, float]]] = {}
    graphs: dict[tuple[int, int], dict[int, dict[int, float]]] = {}
    for line, r in rows:
        pc, kp, nd, kd = (_int_cell(path, line, c, r[c]) for c in ATTENTION_COLUMNS[:4])
        if pc == 0 and nd == 0:
            raise InputError(f"{path}:{line}: a row with prefill_chunk 0 and n_decode 0 describes no work; "
                             f"delete it")
        if nd > 0 and kd == 0:
            raise InputError(f"{path}:{line}: n_decode {nd} with kv_decode 0; a decoding sequence attends to >= 1 "
                             f"token")
        t = _time_cell(path, line, "time_us", r["time_us"], False)
        eager.setdefault((pc, nd), {}).setdefault(kp, {})[kd] = t
        g = _time_cell(path, line, "graph_time_us", r.get("graph_time_us", ""), True)
        if g is not None:
            graphs.setdefault((pc, nd), {}).setdefault(kp, {})[kd] = g
    if not eager:
        raise InputError(f"{path}: no rows; the bundle is incomplete (re-run `tpsim profile`)")

    def build(d):
        slices = {}
        for key, by_kp in d.items():
            kps = sorted(by_kp)
            slices[key] = AttentionSlice(kps, [Table1D(sorted(by_kp[kp]), [by_kp[kp][k] for k in sorted(by_kp[kp])])
                                               for kp in kps])
        return AttentionTable(slices)

    return build(eager), (build(graphs) if graphs else None)


def _load_yaml(path: Path) -> dict:
    try:
        import yaml  # only when a bundle is read: keeps `tpsim run` start-up light

        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{line}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a YAML mapping")
    return doc


def _skew_fit(tp_dir: Path, meta: dict, tp: int) -> SkewFit | None:
    fit = meta.get("skew_fit")
    if not isinstance(fit, dict) or not fit.get("enabled"):
        return None
    per_tp = fit.get("per_tp") or {}
    entry = per_tp.get(tp, per_tp.get(str(tp)))
    if not isinstance(entry, dict):
        return None
    axes = entry.get("bucket_axes") or fit.get("bucket_axes") or DEFAULT_SKEW_AXES
    for key in DEFAULT_SKEW_AXES:
        if key not in axes:
            raise InputError(f"{tp_dir.parent / 'meta.yaml'}: skew_fit.bucket_axes lacks '{key}'")
    alphas: dict[str, float] = {}
    inline = entry.get("alpha_by_bucket")
    if isinstance(inline, dict):
        alphas.update({str(k): float(v) for k, v in inline.items()})
    path = tp_dir / "skew_fit.csv"
    if path.is_file():
        for line, r in _read_csv(path, SKEW_FIT_COLUMNS):
            try:
                alpha = float(r["alpha"])
            except ValueError:
                raise InputError(f"{path}:{line}: column alpha must be a number, got {r['alpha']!r}") from None
            key = f"pc={_int_cell(path, line, 'pc', r['pc'])}|{r['n_label']}|{r['skew_rate_label']}|" \
                  f"{r['kv_big_label']}|{r['kp_label']}"
            alphas[key] = alpha
    default = entry.get("alpha_default", fit.get("alpha_default", 0.0))
    return SkewFit(alphas, float(default or 0.0), axes)


def _check_tp(path: Path, declared, tp: int | None) -> None:
    if tp is not None and declared is not None and int(declared) != tp:
        raise InputError(f"{path}: this bundle was profiled for tp={declared}, not tp={tp}; profile with "
                         f"`tpsim profile --tp {tp}` or use the tp{tp}/ folder")


def read_bundle(tp_dir, tp: int | None = None) -> Bundle:
    """Parse a ``tp<N>/`` folder of either format; ``tp`` (if given) must match it."""
    tp_dir = Path(tp_dir)
    if not tp_dir.is_dir():
        raise InputError(f"{tp_dir}: no such profile bundle folder "
                         f"(expected <hardware>/<org>/<model>/<variant>/tp<N>/)")
    name = tp_dir.name
    folder_tp = int(name[2:]) if name.startswith("tp") and name[2:].isdigit() else None
    own_meta = tp_dir / "meta.yaml"
    if own_meta.is_file():
        meta = _load_yaml(own_meta)
        if meta.get("format") != FORMAT_NAME:
            raise InputError(f"{own_meta}: 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r} (an "
                             f"LLMServingSim bundle keeps its meta.yaml one folder up)")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise InputError(f"{own_meta}: format_version {version!r} is not supported (this tpsim reads "
                             f"{FORMAT_VERSION}); re-run `tpsim profile`")
        declared = meta.get("tp")
        if declared is None:
            raise InputError(f"{own_meta}: missing field 'tp'")
        _check_tp(own_meta, declared, folder_tp)
        _check_tp(tp_dir, declared, tp)
        bundle_tp = int(declared)
        dense, dense_g = _tables_1d(tp_dir / "dense.csv", "tokens", True)
        per_seq, per_seq_g = _tables_1d(tp_dir / "per_sequence.csv", "sequences", True)
        attn, attn_g = _attention_tables(tp_dir / "attention.csv", True)
        timing = meta.get("timing", "wall")
        if timing not in ("wall", "kernel"):
            raise InputError(f"{own_meta}: 'timing' must be wall or kernel, got {timing!r}")
        return Bundle(tp_dir, FORMAT_NAME, bundle_tp, timing, meta, dense, per_seq, attn, dense_g, per_seq_g, attn_g,
                      None, str(meta.get("hardware") or ""), str(meta.get("model") or ""),
                      str(meta.get("variant") or ""))
    # LLMServingSim: CSVs here, meta.yaml in the variant folder
    if not any((tp_dir / f).is_file() for f in ("dense.csv", "per_sequence.csv", "attention.csv")):
        raise InputError(f"{tp_dir}: neither a tpsim bundle (no meta.yaml) nor an LLMServingSim one (no dense.csv, "
                         f"per_sequence.csv, attention.csv)")
    if folder_tp is None:
        raise InputError(f"{tp_dir}: an LLMServingSim bundle folder must be named tp<N>")
    _check_tp(tp_dir, folder_tp, tp)
    variant_meta = tp_dir.parent / "meta.yaml"
    meta = _load_yaml(variant_meta) if variant_meta.is_file() else {}
    tps = meta.get("tp_degrees")
    if isinstance(tps, list) and tps and folder_tp not in [int(t) for t in tps if isinstance(t, int)]:
        raise InputError(f"{variant_meta}: tp_degrees {tps} does not include {folder_tp}, yet {tp_dir} exists; "
                         f"the bundle is inconsistent")
    dense, _ = _tables_1d(tp_dir / "dense.csv", "tokens", False)
    per_seq, _ = _tables_1d(tp_dir / "per_sequence.csv", "sequences", False)
    attn, _ = _attention_tables(tp_dir / "attention.csv", False)
    skew = _skew_fit(tp_dir, meta, folder_tp)
    parts = tp_dir.parts
    model = str(meta.get("model") or "/".join(parts[-4:-2]))
    moe = None
    if (tp_dir / "moe.csv").is_file():
        from tpsim.perf.moe_table import read_moe_table

        moe = read_moe_table(tp_dir / "moe.csv")
    return Bundle(tp_dir, "llmservingsim", folder_tp, "kernel", meta, dense, per_seq, attn, {}, {}, None, skew,
                  str(meta.get("hardware") or (parts[-5] if len(parts) >= 5 else "")), model,
                  str(meta.get("variant") or tp_dir.parent.name), moe)


# --------------------------------------------------------------------------- writing
def _fmt_us(ns: float | None) -> str:
    return "" if ns is None else f"{ns / 1000.0:.4f}"


def _plain(obj):
    """Plain YAML types (str subclasses such as torch's version string become str)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    return str(obj)


def write_bundle(out_dir, meta: dict, dense: list[tuple], per_sequence: list[tuple], attention: list[tuple]) -> Path:
    """Write a tpsim-format bundle.

    ``dense`` rows: (layer, tokens, time_ns, graph_ns or None); ``per_sequence``
    rows: (layer, sequences, time_ns, graph_ns or None); ``attention`` rows:
    (prefill_chunk, kv_prefill, n_decode, kv_decode, time_ns, graph_ns or None).
    ``meta`` gets ``format``/``format_version`` added; it must carry ``tp``.
    """
    out = Path(out_dir)
    if "tp" not in meta:
        raise ValueError("bundle meta needs 'tp'")
    out.mkdir(parents=True, exist_ok=True)
    doc = _plain({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "timing": "wall", **meta})
    import yaml

    (out / "meta.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120))
    with open(out / "dense.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(DENSE_COLUMNS)
        for layer, n, t, g in dense:
            w.writerow([layer, int(n), _fmt_us(t), _fmt_us(g)])
    with open(out / "per_sequence.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PER_SEQUENCE_COLUMNS)
        for layer, n, t, g in per_sequence:
            w.writerow([layer, int(n), _fmt_us(t), _fmt_us(g)])
    with open(out / "attention.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(ATTENTION_COLUMNS)
        for pc, kp, nd, kd, t, g in attention:
            w.writerow([int(pc), int(kp), int(nd), int(kd), _fmt_us(t), _fmt_us(g)])
    return out


# --------------------------------------------------------------------------- finding
