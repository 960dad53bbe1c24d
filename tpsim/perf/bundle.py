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
from dataclasses import dataclass, field
from pathlib import Path

from tpsim.errors import InputError
from tpsim.perf.bundle_attention import (  # noqa: F401 (AttentionSlice re-exported)
    ATTENTION_COLUMNS,
    AttentionSlice,
    AttentionTable,
    read_attention_tables,
)
from tpsim.perf.bundle_csv import (  # noqa: F401 (the sources re-exported: a bundle's lookups name them)
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
from tpsim.perf.bundle_skew import DEFAULT_SKEW_AXES, SkewFit, read_skew_fit  # noqa: F401 (re-exported)

FORMAT_NAME = "tpsim"
FORMAT_VERSION = 1

DENSE_COLUMNS = ("layer", "tokens", "time_us", "graph_time_us")
PER_SEQUENCE_COLUMNS = ("layer", "sequences", "time_us", "graph_time_us")


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
        attn, attn_g = read_attention_tables(tp_dir / "attention.csv", True)
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
    attn, _ = read_attention_tables(tp_dir / "attention.csv", False)
    skew = read_skew_fit(tp_dir, meta, folder_tp)
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
