"""Profile-driven iteration latency: measured per-op times from a bundle.

:class:`ProfileModel` is the analytical model with its compute ops replaced
by measurements (see :mod:`tpsim.perf.bundle` for the two bundle formats it
reads).  Everything the bundle does not measure keeps the analytical model's
terms, computed by the very same code (the step's ops come from the builders
every model shares, :mod:`tpsim.perf.ops`, and an
:class:`~tpsim.perf.analytical.AnalyticalModel` prices those it does not measure): the
two TP all-reduces per layer, the embedding all-reduce, the logits gather,
pipeline transfers, the per-step and per-sequence framework overhead from the
hardware catalog, and any op missing from the bundle (labelled
``analytical``).

The host (framework) time is the analytical model's too
(``host_visible_ns``): with async scheduling (``engine.async_scheduling``,
vLLM >= 0.12's default, vllm-project/vllm#27614) step N+1 is prepared while
step N runs on the GPU, so only the host time the GPU does not hide is
charged (the ``framework`` op's ``bound`` says "hidden" when that is none);
with ``--no-async-scheduling`` all of it, in series.

Per decoder layer, on one GPU::

    layernorm -> qkv_proj -> [qk_norm] -> rotary_emb -> attention (incl. the KV-cache write)
    -> o_proj -> all-reduce -> layernorm -> gate_up_proj -> act_fn -> down_proj -> all-reduce

and once per step ``embedding``, ``final_layernorm``, ``lm_head`` and
``sampler`` over every scheduled sequence (vLLM V1 computes logits for each
request in the batch, discarding a partial prefill's token afterwards; this is
also LLMServingSim's ``lm_head_len``).

Lookups (each op's source says which case applied):

* token- and sequence-indexed ops: linear between grid points ("interpolated"),
  exact at them ("measured"), the first value below the grid and a line
  through the top two points above it ("extrapolated"; slope >= 0);
* attention: LLMServingSim's 4-D lookup over (prefill_chunk, kv_prefill,
  n_decode, kv_decode): bilinear over the bracketing (prefill_chunk, n_decode)
  slices, bilinear over (kv_prefill, kv_decode) inside each, kv_decode = the
  integer mean of the decode contexts.  Differences from LLMServingSim, chosen
  deliberately:

  - several prefill chunks are not merged into one chunk of summed length and
    summed history (which charges a causal triangle over all of them).  One
    varlen kernel costs a fixed part once plus each sequence's own work, so
    the largest chunk is looked up together with the decodes and each other
    chunk adds ``T(chunk alone) - T0``, ``T0`` being the smallest profiled
    prefill call (the fixed part), floored at 0;
  - 0 is its own regime on the prefill_chunk and n_decode axes: a batch with a
    prefill chunk of 8 tokens is read from the smallest profiled chunk, not
    interpolated towards "no prefill"; a missing slice is replaced by the
    nearest one of the same regime in log distance;
  - skew correction (``t_mean + alpha (t_max - t_mean)``, alpha from
    ``skew_fit``, keyed as LLMServingSim keys it) needs the decode contexts'
    minimum, which the simulator does not track: it is estimated as
    ``max(1, 2 mean - max)`` (contexts spread evenly between min and max).

CUDA graphs follow the analytical model's rule (``graph_plan``: steps of up to
``max_graph_batch`` tokens replay graphs, attention only inside a pure-decode
step's full graph).  Timing conventions: a tpsim bundle's times are wall
times (launch gaps included); its ``graph_time_us`` column is used where the
step replays a graph and the column covers the size.  An LLMServingSim
bundle's times are sums of CUDA kernel durations, so each measured kernel goes
through the analytical model's per-kernel cost (``kernel_time_ns``: a graph gap,
or eagerly at least the launch time), 2 kernels for attention and 4 for the
sampler, as the analytical model counts them.

The hot path caches everything that depends on the token count only;
:meth:`decode_iteration_ns` costs a few dictionary look-ups and two bisections.
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

from tpsim.config import catalog
from tpsim.errors import InputError
from tpsim.perf.analytical import AnalyticalModel
from tpsim.perf.base import BatchShape, OpTime
from tpsim.perf.bundle import Bundle, locate, read_bundle, variant_name
from tpsim.perf.bundle_attention import AttentionTable
from tpsim.perf.bundle_csv import EXTRAPOLATED, MEASURED, Table1D, worst
from tpsim.perf.ops import (
    ATTENTION,
    EXPERTS,
    KV_IN_ATTENTION,
    Execution,
    Op,
    StepOps,
    StepPlan,
)
from tpsim.perf.step import StepModel
from tpsim.perf.vllm_exec import EAGER, FULL

#: analytical op name -> the bundle's layer name
LAYER_OPS = {
    "input_layernorm": "layernorm",
    "post_attention_layernorm": "layernorm",
    "qkv_proj": "qkv_proj",
    "qk_norm": "qk_norm",
    "rotary_emb": "rotary_emb",
    "o_proj": "o_proj",
    "gate_up_proj": "gate_up_proj",
    "act_fn": "act_fn",
    "down_proj": "down_proj",
}
HEAD_DENSE_OPS = {"embedding": "embedding", "final_layernorm": "final_layernorm"}
PER_SEQUENCE_OPS = ("lm_head", "sampler")
#: kernels an op launches (for the per-kernel overhead added to kernel-timed bundles)
KERNELS = {"attention": 2, "sampler": 4, "moe_block": 7}

_CACHE: dict[tuple, Bundle] = {}


def profile_roots(profile_dir: str | None = None) -> list[Path]:
    roots = [Path(profile_dir)] if profile_dir else []
    return roots + catalog.profile_roots()


def find_bundle(hardware: str, model: str, dtype: str, kv_cache_dtype: str, tp: int,
                profile_dir: str | None = None) -> Bundle | None:
    """The measured bundle for these keys, or None.

    Searched: ``profile_dir`` (a root in LLMServingSim's layout, a variant
    folder, or a ``tp<N>/`` folder itself), then the ``profiles/`` roots of
    :func:`tpsim.config.catalog.profile_roots`.
    """
    if profile_dir and not Path(profile_dir).is_dir():
        raise InputError(f"--profile-dir {profile_dir}: no such folder")
    path = locate(profile_roots(profile_dir), hardware, model, dtype, kv_cache_dtype, tp)
    if path is None:
        return None
    try:
        stamp = max((p.stat().st_mtime_ns for p in path.iterdir() if p.is_file()), default=0)
    except OSError:
        stamp = 0
    key = (str(path.resolve()), stamp, tp)
    bundle = _CACHE.get(key)
    if bundle is None:
        bundle = read_bundle(path, tp)
        _check_keys(bundle, hardware, model, variant_name(dtype, kv_cache_dtype))
        _CACHE[key] = bundle
    return bundle


def _check_keys(bundle: Bundle, hardware: str, model: str, variant: str) -> None:
    for what, have, want in (("hardware", bundle.hardware, hardware), ("model", bundle.model, model),
                             ("variant", bundle.variant, variant)):
        if have and have != want:
            raise InputError(f"{bundle.path}: this bundle is for {what} {have!r}, not {want!r}; point --profile-dir "
                             f"at the bundle for {want} (layout <hardware>/<org>/<model>/<variant>/tp<N>/)")


class ProfileModel(StepModel):
    """Measured op times; communication, host overhead and unmeasured ops from an :class:`AnalyticalModel`.

    The analytical model is held, not inherited, so that its closed-form hot paths can never stand in
    for measured ones; it prices (:meth:`AnalyticalModel.price`) the ops the bundle does not measure and
    gives every op its FLOPs, bytes and bound.
    """

    name = "profile"

    def __init__(self, bundle: Bundle, *, model, hardware, engine, tp: int, pp: int, mem_bw_gbps: float,
                 link_bw_gbps: float, link_latency_ns: float, comm=None, layout=None, routing: str = "BALANCED"):
        if bundle.tp != tp:
            raise InputError(f"{bundle.path}: bundle profiled for tp={bundle.tp}, instance runs tp={tp}; use the "
                             f"tp{tp}/ bundle")
        attn = bundle.attention
        if attn is None or not attn.has_regime(True, False) or not attn.has_regime(False, True):
            raise InputError(f"{bundle.path}/attention.csv: needs prefill-only rows (n_decode 0) and decode-only "
                             f"rows (prefill_chunk 0); re-run `tpsim profile`")
        self.roofline = r = AnalyticalModel(model, hardware, engine, tp, pp, mem_bw_gbps, link_bw_gbps,
                                            link_latency_ns, comm, moe=False)
        self.model, self.hardware, self.engine = model, hardware, engine
        self.tp, self.pp, self.shape, self.num_layers = tp, pp, r.shape, r.num_layers
        self.max_graph_batch = r.max_graph_batch
        self.bundle = bundle
        self.kernel_timed = bundle.timing == "kernel"
        self.skew = bundle.skew
        self.needs_ctx_max = self.skew is not None
        if self.skew is not None:
            a = self.skew.axes
            self._sr_bins, self._sr_n = list(a["skew_rate_bins"]), len(a["skew_rate_labels"])
            self._kvb_bins, self._kvb_n = list(a["kv_big_bins"]), len(a["kv_big_labels"])
            self._kp0_idx = self.skew.label_index(a["kp_bins"], a["kp_labels"], 0)
        t0, _ = attn.lookup(attn.pcs[0], 0, 0, 0)
        self._attn_fixed = t0  # smallest profiled prefill call: the fixed part of one launch
        self._dec_cache: dict[tuple[int, bool], tuple] = {}
        # the bundle times the KV-cache write inside attention, as vLLM's Attention layer runs it
        self.step_ops = StepOps(model, r.shape, engine, Execution(KV_IN_ATTENTION, False, r.shape.vocab * tp), pp)
        self._init_step_caches()
        self.missing_ops = sorted({op for op, layer in {**LAYER_OPS, **HEAD_DENSE_OPS}.items()
                                   if layer not in bundle.dense and (op != "qk_norm" or self.shape.qk_norm)}
                                  | {op for op in PER_SEQUENCE_OPS if op not in bundle.per_sequence})
        if model.is_moe:
            from tpsim.perf.moe_costs import ProfileExperts, moe_layer

            self.moe = moe_layer(model, layout, tp, pp, routing, engine)
            self._experts = ProfileExperts(self, self.moe)
            self.moe_block = self._experts.table
            self.routing_in_experts = self.moe_block is not None
            if self.moe_block is None:
                self.missing_ops.append("moe_block")

    # ----------------------------------------------------------------- measured op times
    def _kernel_cost(self, op: str, t: float, graph: bool) -> float:
        """A measured time on the critical path.

        Wall-timed bundles already include launch gaps.  Kernel-timed ones get
        the analytical model's per-kernel cost around each kernel they launch.
        """
        if not self.kernel_timed:
            return t
        kt = self.roofline.kernel_time_ns
        extra = KERNELS.get(op, 1) - 1
        return kt(t, graph) + (extra * kt(0.0, graph) if extra else 0.0)

    def _lookup(self, op: str, layer: str, x: int, graph: bool, eager: dict, graphs: dict) -> tuple[float, str]:
        table = graphs.get(layer) if graph else None
        if table is None or x > table.max_key:
            table = eager[layer]
        v, src = table.lookup(x)
        return self._kernel_cost(op, v, graph), src

    def _measured(self, op: Op) -> tuple[float, str] | None:
        """The bundle's time of a dense, head or per-sequence op (None: not measured)."""
        b = self.bundle
        layer = LAYER_OPS.get(op.name) or HEAD_DENSE_OPS.get(op.name)
        if layer is not None and layer in b.dense:
            return self._lookup(op.name, layer, op.tokens, op.graph, b.dense, b.dense_graph)
        if op.name in PER_SEQUENCE_OPS and op.name in b.per_sequence:
            return self._lookup(op.name, op.name, op.tokens, op.graph, b.per_sequence, b.per_sequence_graph)
        return None

    def price(self, op: Op) -> OpTime:
        """The bundle's time where it measures the op, the roofline's otherwise; FLOPs, bytes and bound
        the roofline's."""
        base = self.roofline.price(op) if op.kind != EXPERTS else None
        if op.kind == ATTENTION:
            if op.batch is None:
                return base
            t, src = self._attention_ns(op.batch, op.graph)
        elif op.kind == EXPERTS:
            t, src, f, b = self._experts(op)
            return OpTime(op.name, op.component, t, op.count, f, b, "kernel", src)
        else:
            measured = self._measured(op)
            if measured is None:
                return base
            t, src = measured
        return OpTime(op.name, op.component, t, op.count, base.flops, base.bytes, base.bound, src)

    # ----------------------------------------------------------------- attention
    def _table(self, graph: bool, nd: int) -> AttentionTable:
        g = self.bundle.attention_graph
        if graph and g is not None and g.nds and nd <= g.nds[-1]:
            return g
        return self.bundle.attention

    def _decode_entry(self, nd: int, graph: bool) -> tuple:
        """Per decode count: the kv_decode table of this count (cached).

        Between two profiled counts the two slices' kv_decode rows are blended
        (as AttentionTable.lookup does at prefill_chunk 0); rows on the same kv
        grid are merged into one table first, which is the same function.
        """
        key = (nd, graph)
        entry = self._dec_cache.get(key)
        if entry is None:
            table = self._table(graph, nd)
            n0, n1, tn, sn = table.bracket(table.nds, nd)
            s0, s1 = table.slices.get((0, n0)), table.slices.get((0, n1))
            if s0 is None:
                s0, sn = table.slices[table.nearest(0, n0)], EXTRAPOLATED
            if s1 is None:
                s1, sn = table.slices[table.nearest(0, n1)], EXTRAPOLATED
            if n1 == n0:
                s1 = None
            # at kv_prefill 0 a slice's value is its first kv_prefill row's (exact at 0, or clamped below)
            r0 = s0.rows[0]
            r1 = s1.rows[0] if s1 is not None else None
            if r1 is not None and r1.keys == r0.keys:
                r0 = Table1D(r0.keys, [a + tn * (b - a) for a, b in zip(r0.values, r1.values)])
                r1 = None
            n_idx = -1
            if self.skew is not None:
                a = self.skew.axes
                n_idx = self.skew.label_index(a["n_bins"], a["n_labels"], nd)
            entry = (r0, r1, tn, n_idx, s0, s1, sn)
            self._dec_cache[key] = entry
        return entry

    def _decode_attention(self, nd: int, kd: int, kd_max: int, graph: bool) -> float:
        """Decode-only attention (ns) with skew correction and the kernel cost."""
        r0, r1, tn, n_idx, _, _, _ = self._decode_entry(nd, graph)
        t = r0.value(kd)
        if r1 is not None:
            t = t + tn * (r1.value(kd) - t)
        if n_idx >= 0 and nd > 1 and kd_max > kd:
            kd_min = 2 * kd - kd_max
            if kd_min < 1:
                kd_min = 1
            rate = (kd - kd_min) / (kd_max - kd_min) if kd_max > kd_min else 0.5
            sr_idx = bisect_left(self._sr_bins, rate, 1) - 1
            kvb_idx = bisect_left(self._kvb_bins, kd_max, 1) - 1
            alpha = self.skew.alpha_at((0, n_idx, sr_idx if sr_idx < self._sr_n else self._sr_n - 1,
                                        kvb_idx if kvb_idx < self._kvb_n else self._kvb_n - 1, self._kp0_idx))
            if alpha != 0.0:
                t_max = r0.value(kd_max)
                if r1 is not None:
                    t_max = t_max + tn * (r1.value(kd_max) - t_max)
                if t_max > t:
                    t = t + alpha * (t_max - t)
        return self._kernel_cost("attention", t, graph)

    def _decode_source(self, nd: int, kd: int, graph: bool) -> str:
        s0, s1, sn = self._decode_entry(nd, graph)[4:]
        return worst(sn, s0.source(0, kd), s1.source(0, kd) if s1 is not None else MEASURED)

    def _skewed(self, table: AttentionTable, pc: int, kp: int, nd: int, kd: int, kd_max: int, t_mean: float) -> float:
        """LLMServingSim's skew correction; the decode contexts' minimum is estimated (see the module doc)."""
        kd_min = max(1, 2 * kd - kd_max)
        rate = (kd - kd_min) / (kd_max - kd_min) if kd_max > kd_min else 0.5
        alpha = self.skew.alpha(pc, nd, rate, kd_max, kp)
        if alpha == 0.0:
            return t_mean
        t_max, _ = table.lookup(pc, kp, nd, kd_max)
        if t_max <= t_mean:
            return t_mean
        return t_mean + alpha * (t_max - t_mean)

    def _attention_ns(self, batch: BatchShape, graph: bool) -> tuple[float, str]:
        """Attention of one layer (ns, source); ``graph``: replayed inside a full CUDA graph (pure decode)."""
        nd = batch.num_decode
        kd = batch.decode_ctx_sum // nd if nd else 0
        if not batch.prefill:
            return self._decode_attention(nd, kd, batch.decode_ctx_max, graph), self._decode_source(nd, kd, graph)
        table = self.bundle.attention
        chunks = sorted(batch.prefill, reverse=True)
        q, c = chunks[0]
        t, src = table.lookup(q, c, nd, kd)
        if self.skew is not None and nd > 1 and batch.decode_ctx_max > kd:
            t = self._skewed(table, q, c, nd, kd, batch.decode_ctx_max, t)
        for q, c in chunks[1:]:
            ti, si = table.lookup(q, c, 0, 0)
            if ti > self._attn_fixed:
                t += ti - self._attn_fixed
            src = worst(src, si)
        return self._kernel_cost("attention", t, False), src

    def attention_ns(self, batch: BatchShape, graph: bool) -> float:
        return self._attention_ns(batch, graph)[0]

    # ----------------------------------------------------------------- the step
    def _with_host(self, gpu_ns: float, num_seqs: int) -> float:
        """Step time: the GPU's plus the host time it does not hide (the analytical model's rule)."""
        return gpu_ns + self.roofline.host_visible_ns(gpu_ns, num_seqs)

    def graph_plan(self, batch: BatchShape | None) -> tuple[str, int, int]:
        return self.roofline.graph_plan(batch)

    def step_plan(self, mode: str, tokens: int, attention_tokens: int, logits_rows: int) -> StepPlan:
        return StepPlan(mode, tokens, attention_tokens, logits_rows)

    def dense_plan(self, batch: BatchShape) -> StepPlan:
        """The analytical model's CUDA-graph rule; logits of every scheduled sequence."""
        mode, n, _ = self.roofline.graph_plan(batch)
        return StepPlan(mode, n, n, batch.num_seqs)

    def host_visible_ns(self, gpu_ns: float, num_seqs: int) -> float:
        return self.roofline.host_visible_ns(gpu_ns, num_seqs)

    def decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int, ctx_sq: int = 0) -> int:
        if self.moe is not None:
            return self.moe_decode_iteration_ns(num_decode, ctx_sum, ctx_max, ctx_sq)
        graph = num_decode <= self.max_graph_batch
        fixed = self._fixed_ns(FULL if graph else EAGER, num_decode, num_decode, num_decode)
        attn = self._decode_attention(num_decode, ctx_sum // num_decode, ctx_max, graph)
        return int(round(self._with_host(fixed + attn * self.num_layers, num_decode)))

    def dense_decode_steps(self, num_decode: int, ctx_sum: int, ctx_max: int, t: int, steps: int,
                           bound: float, ends: list, ctx_sq: int = 0) -> bool:
        graph = num_decode <= self.max_graph_batch
        fixed = self._fixed_ns(FULL if graph else EAGER, num_decode, num_decode, num_decode)
        layers = self.num_layers
        attention = self._decode_attention
        with_host = self._with_host
        append = ends.append
        for _ in range(steps):  # the arithmetic of decode_iteration_ns, step by step
            ctx_sum += num_decode
            if ctx_max:
                ctx_max += 1
            t += int(round(with_host(fixed + attention(num_decode, ctx_sum // num_decode, ctx_max, graph) * layers,
                                     num_decode)))
            append(t)
            if t >= bound:
                return True
        return True

    def describe(self) -> dict:
        p = self.hardware.perf
        d = {"name": self.name, **self.bundle.describe()}
        d.update({
            "hardware_entry": self.hardware.name,
            "hardware_source": self.hardware.source,
            "per_kernel_overhead_added": self.kernel_timed,
            "host_overhead": "overlapped with the GPU (async scheduling): only its excess is charged"
            if self.roofline.async_scheduling else "in series with the GPU",
            "ops_from_catalog": self.missing_ops,
            "catalog_params": {k: getattr(p, k) for k in ("kernel_overhead_ns", "graph_kernel_overhead_ns",
                                                          "iteration_overhead_ns", "per_sequence_overhead_ns",
                                                          "max_graph_batch")},
            "provenance": {"measured_ops": f"{self.bundle.format} bundle {self.bundle.path}",
                           "communication_and_overhead": f"hardware catalog {self.hardware.source}"},
        })
        if self.moe is not None:
            d["moe"] = {**self.moe.describe(), "moe_block": "bundle moe.csv" if self.moe_block is not None else
                        "roofline (no moe.csv for this tp, or experts split by width)"}
        return d
