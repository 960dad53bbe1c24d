"""Measure one GPU's per-op times for a profile bundle (``tpsim profile``).  Needs torch.

Every op of a decoder layer, the embedding and the LM head is run on one
device with random weights at the per-GPU shapes of tensor parallelism ``tp``
(:class:`tpsim.memory.ShardShape`: heads, KV heads (one replicated head when
kv_heads < tp), intermediate size and vocabulary divided by ``tp``) over a
grid of token counts; attention over a grid of (prefill chunk, its cached
context, decode count, decode context).  The result is written with
:func:`tpsim.perf.bundle.write_bundle`.

What runs (plain PyTorch, no custom kernels, so vLLM's fused kernels will
differ somewhat; the bundle's ``meta.yaml`` says the same under ``kernels``):

* ``layernorm`` / ``final_layernorm``: residual add + ``F.rms_norm``;
  ``qk_norm``: ``F.rms_norm`` over q and k per head;
* ``qkv_proj``, ``o_proj``, ``gate_up_proj``, ``down_proj``, ``lm_head``:
  ``F.linear`` with the sharded weight;
* ``rotary_emb``: neox-style rotation of q and k from a cos/sin cache indexed
  by position;
* ``act_fn``: ``silu(gate) * up``;
* ``embedding``: vocab-parallel lookup (ids outside the local shard masked
  to zero when tp > 1);
* ``sampler``: fp32 logits over the full vocabulary, greedy ``argmax``;
* ``attention``: writing the step's new K/V into a paged cache
  (``index_copy_`` by slot), then ``F.scaled_dot_product_attention`` with
  grouped-query attention: the prefill chunk attends causally (lower-right
  aligned) to its cached context plus itself, the decodes (batched, one query
  each) to their ``kv_decode`` keys.  K/V are read contiguous, not through
  block tables, and there is no split-KV decode kernel: vLLM's FlashAttention
  varlen kernel over the paged cache will differ, most for long-context decode.

Timing: on CUDA, CUDA events around ``inner`` back-to-back calls (median of
``repeats`` after ``warmup``), and for decode-sized shapes (tokens <=
``max_graph_batch``, decode-only attention) the same calls captured in a
``torch.cuda.CUDAGraph`` and replayed, as serving engines run decode steps;
on CPU ``time.perf_counter``.  Calls cycle through enough copies of weights
and inputs to exceed twice the GPU's L2 cache, so weights stream from memory
as they do in a full model.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from tpsim.memory import ShardShape
from tpsim.perf.bundle import variant_name, write_bundle
from tpsim.perf.grids import GRIDS, attention_shapes

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

DENSE_OPS = ("layernorm", "qk_norm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn", "down_proj",
             "embedding", "final_layernorm")
PER_SEQUENCE_OPS = ("lm_head", "sampler")
KERNELS = {
    "layernorm": "x + residual, then torch.nn.functional.rms_norm (2 kernels; vLLM fuses them)",
    "qk_norm": "torch.nn.functional.rms_norm over q and k per head",
    "qkv_proj": "torch.nn.functional.linear (cuBLAS GEMM)",
    "o_proj": "torch.nn.functional.linear (cuBLAS GEMM)",
    "gate_up_proj": "torch.nn.functional.linear (cuBLAS GEMM)",
    "down_proj": "torch.nn.functional.linear (cuBLAS GEMM)",
    "lm_head": "torch.nn.functional.linear onto the local vocabulary shard",
    "rotary_emb": "neox rotary embedding in plain torch (several elementwise kernels; vLLM uses one)",
    "act_fn": "silu(gate) * up in plain torch (2 kernels; vLLM fuses them)",
    "embedding": "torch.nn.functional.embedding on the local vocabulary shard (+ masking when tp > 1)",
    "sampler": "logits.float() over the full vocabulary, argmax (greedy)",
    "attention": "KV-cache write (index_copy_ by slot) + torch.nn.functional.scaled_dot_product_attention with "
                 "GQA (prefill: causal lower-right over cached context + chunk; decode: batched single queries over "
                 "contiguous K/V); vLLM's FlashAttention varlen kernel over the paged cache differs",
}


# --------------------------------------------------------------------------- timing
class Timer:
    """Median per-call time of a closure: eager and (CUDA) graph-replayed."""

    def __init__(self, device: str, warmup: int, repeats: int, inner: int):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.warmup = max(0, warmup)
        self.repeats = max(1, repeats)
        self.inner = max(1, inner)

    def eager(self, fn) -> float:
        """ns per call."""
        for _ in range(self.warmup):
            fn()
        samples = []
        if self.cuda:
            torch.cuda.synchronize()
            for _ in range(self.repeats):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(self.inner):
                    fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) * 1e6 / self.inner)
        else:
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                for _ in range(self.inner):
                    fn()
                samples.append((time.perf_counter() - t0) * 1e9 / self.inner)
        return statistics.median(samples)

    def graph(self, fn) -> float | None:
        """ns per call replayed from a CUDA graph of ``inner`` calls; None off CUDA."""
        if not self.cuda:
            return None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(self.inner):
                fn()
        for _ in range(max(1, self.warmup)):
            g.replay()
        torch.cuda.synchronize()
        samples = []
        for _ in range(self.repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            g.replay()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e6 / self.inner)
        del g
        return statistics.median(samples)


class Cycle:
    """Calls a function over several argument sets in turn (to keep weights out of the L2 cache)."""

    def __init__(self, fn, arg_sets):
        self.fn = fn
        self.arg_sets = arg_sets
        self.i = 0

    def __call__(self):
        args = self.arg_sets[self.i]
        self.i = (self.i + 1) % len(self.arg_sets)
        return self.fn(*args)


# --------------------------------------------------------------------------- ops
class OpFactory:
    """Builds timed closures for one model's per-GPU shapes."""

    def __init__(self, shape: ShardShape, dtype, device: str, kv_block_size: int, l2_bytes: int,
                 max_position: int, seed: int, rms_eps: float = 1e-6):
        self.s = shape
        self.dtype = dtype
        self.device = device
        self.block = kv_block_size
        self.flush = 2 * l2_bytes
        self.max_position = max_position
        self.eps = rms_eps
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.dev_gen = torch.Generator(device=device).manual_seed(seed)
        self.elt = torch.tensor([], dtype=dtype).element_size()
        self.attention_variants: dict[str, str] = {}

    def rand(self, *shape, dtype=None):
        """Random values made on the device itself (decode K/V run to gigabytes)."""
        return torch.randn(*shape, generator=self.dev_gen, device=self.device, dtype=dtype or self.dtype).mul_(0.02)

    def copies(self, nbytes: float, cap: int = 64) -> int:
        if self.flush <= 0 or nbytes <= 0:
            return 1
        return int(min(cap, max(1, math.ceil(self.flush / nbytes))))

    # token-count ops ------------------------------------------------------
    def dense(self, op: str, n: int):
        s, e = self.s, self.elt
        h = s.hidden
        if op in ("layernorm", "final_layernorm"):
            k = self.copies(2 * n * h * e)
            w = self.rand(h)
            sets = [(self.rand(n, h), self.rand(n, h)) for _ in range(k)]
            return Cycle(lambda x, r: F.rms_norm(x + r, (h,), w, self.eps), sets)
        if op == "qk_norm":
            d = s.head_dim
            k = self.copies(n * (s.q_dim + s.kv_dim) * e)
            w = self.rand(d)
            sets = [(self.rand(n, s.heads, d), self.rand(n, s.kv_heads, d)) for _ in range(k)]
            return Cycle(lambda q, kk: (F.rms_norm(q, (d,), w, self.eps), F.rms_norm(kk, (d,), w, self.eps)), sets)
        if op in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
            k_in, k_out = {"qkv_proj": (h, s.q_dim + 2 * s.kv_dim), "o_proj": (s.q_dim, h),
                           "gate_up_proj": (h, 2 * s.inter), "down_proj": (s.inter, h)}[op]
            return self._linear(n, k_in, k_out)
        if op == "rotary_emb":
            d = s.head_dim
            half = d // 2
            pos = torch.randint(0, self.max_position, (n,), generator=self.gen).to(self.device)
            inv = 1.0 / (500000.0 ** (torch.arange(0, half, dtype=torch.float32) / half))
            freqs = torch.outer(torch.arange(self.max_position, dtype=torch.float32), inv)
            cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(self.device, self.dtype)
            k = self.copies(n * (s.q_dim + s.kv_dim) * e)
            sets = [(self.rand(n, s.heads, d), self.rand(n, s.kv_heads, d)) for _ in range(k)]

            def rope(q, kk):
                cs = cache.index_select(0, pos)
                cos, sin = cs[:, None, :half], cs[:, None, half:]
                out = []
                for x in (q, kk):
                    x1, x2 = x[..., :half], x[..., half:]
                    out.append(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))
                return out
            return Cycle(rope, sets)
        if op == "act_fn":
            inter = s.inter
            k = self.copies(3 * n * inter * e)
            sets = [(self.rand(n, 2 * inter),) for _ in range(k)]
            return Cycle(lambda gu: F.silu(gu[:, :inter]) * gu[:, inter:], sets)
        if op == "embedding":
            vocab_full = s.vocab * s.tp
            w = self.rand(s.vocab, h)
            start = 0  # the first shard; every shard costs the same
            ids = torch.randint(0, vocab_full, (n,), generator=self.gen).to(self.device)
            if s.tp == 1:
                return Cycle(lambda i: F.embedding(i, w), [(ids,)])

            def embed(i):
                mask = (i >= start) & (i < start + s.vocab)
                out = F.embedding((i - start) * mask, w)
                return out.masked_fill_(~mask[:, None], 0)
            return Cycle(embed, [(ids,)])
        raise KeyError(op)

    def _linear(self, n: int, k_in: int, k_out: int):
        wbytes = k_in * k_out * self.elt
        k = self.copies(wbytes + n * (k_in + k_out) * self.elt, cap=32)
        x = self.rand(n, k_in)
        sets = [(x, self.rand(k_out, k_in)) for _ in range(k)]
        return Cycle(F.linear, sets)

    # sequence-count ops ---------------------------------------------------
    def per_sequence(self, op: str, n: int):
        s = self.s
        if op == "lm_head":
            return self._linear(n, s.hidden, s.vocab)
        if op == "sampler":
            vocab_full = s.vocab * s.tp
            k = self.copies(n * vocab_full * (self.elt + 4))
            sets = [(self.rand(n, vocab_full),) for _ in range(k)]
            return Cycle(lambda logits: logits.float().argmax(dim=-1), sets)
        raise KeyError(op)

    # attention --------------------------------------------------------------
    def attention(self, pc: int, kp: int, nd: int, kd: int):
        s = self.s
        d, heads, kvh = s.head_dim, s.heads, s.kv_heads
        new = pc + nd
        # the step's new tokens land in random slots of a paged cache (4x their size)
        slots_total = (-(-new // self.block)) * self.block * 4
        kv_bytes = 2 * ((kp + pc) + nd * kd) * kvh * d * self.elt
        k = self.copies(kv_bytes + new * (heads + 2 * kvh) * d * self.elt, cap=16)
        sets = []
        for _ in range(k):
            cache_k = torch.zeros(slots_total, kvh, d, device=self.device, dtype=self.dtype)
            cache_v = torch.zeros_like(cache_k)
            slots = torch.randperm(slots_total, generator=self.gen)[:new].to(self.device)
            k_new, v_new = self.rand(new, kvh, d), self.rand(new, kvh, d)
            pre = None
            if pc:
                pre = (self.rand(1, heads, pc, d), self.rand(1, kvh, kp + pc, d), self.rand(1, kvh, kp + pc, d))
            dec = None
            if nd:
                dec = (self.rand(nd, heads, 1, d), self.rand(nd, kvh, kd, d), self.rand(nd, kvh, kd, d))
            sets.append((cache_k, cache_v, slots, k_new, v_new, pre, dec))
        mask = None
        if pc:
            from torch.nn.attention.bias import causal_lower_right
            mask = causal_lower_right(pc, kp + pc)
        variants = self.attention_variants
        if pc and "prefill" not in variants:
            variants["prefill"] = _pick_sdpa_variant(sets[0][5], mask)
        if nd and "decode" not in variants:
            variants["decode"] = _pick_sdpa_variant(sets[0][6], None)
        v_pre, v_dec = variants.get("prefill"), variants.get("decode")

        def run(cache_k, cache_v, slots, k_new, v_new, pre, dec):
            cache_k.index_copy_(0, slots, k_new)
            cache_v.index_copy_(0, slots, v_new)
            out = []
            if pre is not None:
                out.append(_sdpa(*pre, mask, v_pre))
            if dec is not None:
                out.append(_sdpa(*dec, None, v_dec))
            return out

        return Cycle(run, sets)


def _sdpa(q, k, v, mask, variant):
    if variant == "gqa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                          attn_mask=mask)


def _pick_sdpa_variant(args, mask) -> str:
    """enable_gqa=True where this torch and backend support it (with the lower-right causal mask)."""
    try:
        _sdpa(*args, mask, "gqa")
        return "gqa"
    except (RuntimeError, TypeError, NotImplementedError):
        return "repeat_kv"


# --------------------------------------------------------------------------- the run
def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def run_profile(model, tp: int, dtype: str, device: str, grid_name: str, *, hardware: str, warmup: int,
                repeats: int, inner: int, max_graph_batch: int, graphs: bool, seed: int = 0,
                log=None, block_size: int = 16) -> tuple[dict, list, list, list]:
    """Time everything; returns (meta, dense rows, per-sequence rows, attention rows) for write_bundle."""
    if dtype not in TORCH_DTYPES:
        raise ValueError(dtype)
    grid = GRIDS[grid_name]
    shape = ShardShape.of(model, tp, 1)
    tdtype = TORCH_DTYPES[dtype]
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        l2 = int(getattr(props, "L2_cache_size", 0) or 0)
        gpu = props.name
    else:
        l2 = 0
        gpu = platform.processor() or platform.machine()
    torch.manual_seed(seed)
    timer = Timer(device, warmup, repeats, inner)
    max_pos = model.max_position_embeddings
    factory = OpFactory(shape, tdtype, device, block_size, l2, min(max_pos, 1 << 17), seed)
    say = log or (lambda msg: None)
    t_start = time.perf_counter()

    graph_failures: dict[str, str] = {}

    def measure(what, fn, graph_ok):
        eager = timer.eager(fn)
        g = None
        if graphs and graph_ok and cuda and what not in graph_failures:
            try:
                g = timer.graph(fn)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:  # capture unsupported: eager only
                graph_failures[what] = str(exc).splitlines()[0][:200]
                say(f"{what}: CUDA graph capture failed, eager times only ({graph_failures[what]})")
                torch.cuda.synchronize()
        return eager, g

    dense_rows = []
    ops = [op for op in DENSE_OPS if op != "qk_norm" or shape.qk_norm]
    for op in ops:
        for n in grid["tokens"]:
            fn = factory.dense(op, n)
            eager, g = measure(op, fn, n <= max_graph_batch)
            dense_rows.append((op, n, eager, g))
            del fn
        say(f"{op}: {len(grid['tokens'])} token counts")
        _free(cuda)
    per_seq_rows = []
    for op in PER_SEQUENCE_OPS:
        for n in grid["sequences"]:
            fn = factory.per_sequence(op, n)
            eager, g = measure(op, fn, n <= max_graph_batch)
            per_seq_rows.append((op, n, eager, g))
            del fn
        say(f"{op}: {len(grid['sequences'])} sequence counts")
        _free(cuda)
    attn_rows = []
    shapes = attention_shapes(grid, max_pos)
    for i, (pc, kp, nd, kd) in enumerate(shapes):
        fn = factory.attention(pc, kp, nd, kd)
        eager, g = measure("attention", fn, pc == 0 and nd <= max_graph_batch)
        attn_rows.append((pc, kp, nd, kd, eager, g))
        del fn
        _free(cuda)
        if (i + 1) % 50 == 0:
            say(f"attention: {i + 1}/{len(shapes)} shapes")
    say(f"attention: {len(shapes)} shapes (SDPA GQA handling: {factory.attention_variants})")
    from tpsim import __version__

    meta = {
        "tool": f"tpsim {__version__} profile",
        "hardware": hardware,
        "model": model.name,
        "model_sha256": model.sha256 or None,
        "dtype": dtype,
        "kv_cache_dtype": "auto",
        "variant": variant_name(dtype, "auto"),
        "tp": tp,
        "device": device,
        "gpu": gpu,
        "driver": _driver_version() if cuda else None,
        "cuda": str(torch.version.cuda) if cuda else None,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "shard": {"hidden": shape.hidden, "heads": shape.heads, "kv_heads": shape.kv_heads,
                  "head_dim": shape.head_dim, "intermediate": shape.inter, "vocab": shape.vocab,
                  "qk_norm": shape.qk_norm},
        "grid": {"name": grid_name, **{k: v for k, v in grid.items()}},
        "warmup": warmup,
        "repeats": repeats,
        "inner": inner,
        "statistic": "median",
        "graph": {"enabled": bool(graphs and cuda), "max_batch": max_graph_batch},
        "l2_flush_bytes": 2 * l2,
        "block_size": block_size,
        "seed": seed,
        "kernels": {**KERNELS, "attention_sdpa_gqa": dict(factory.attention_variants)},
        "graph_failures": graph_failures or None,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "argv": " ".join(sys.argv[1:]) or None,
    }
    return meta, dense_rows, per_seq_rows, attn_rows


def _free(cuda: bool) -> None:
    if cuda:
        torch.cuda.empty_cache()


def profile_to_bundle(out_dir, model, tp: int, dtype: str, device: str, grid_name: str, **kw):
    meta, dense, per_seq, attn = run_profile(model, tp, dtype, device, grid_name, **kw)
    return write_bundle(out_dir, meta, dense, per_seq, attn), meta
