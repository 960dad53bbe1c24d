"""Decode attention over uneven contexts on FlashAttention 2: the time the longest sequences add.

The generation tables time batches of one context length.  A real decode batch mixes contexts, and
FlashAttention 2's decode kernel (vLLM's ``flash_attn_varlen_func`` with one query token per
sequence: GQA packed, ``seqlenq_ngroups_swapped``) runs a grid of ``(1, batch, kv_heads)`` CTAs, or
``(1, splits, batch x kv_heads)`` when it splits the KV (vllm-project/flash-attention
``csrc/flash_attn/flash_api.cpp`` ``set_params_splitkv``, ``src/flash_fwd_launch_template.h``
``run_flash_splitkv_fwd``).  Each CTA streams its sequence's KV (a ``1 / splits`` share of it) for
one KV head; the kernel ends when its last CTA does, so the longest sequences' CTAs finish alone.

A fluid model of that kernel, every term from its schedule (no parameter fitted to measurements):

* **CTAs and slots**: ``batch x kv_heads x splits`` CTAs, at most ``2 x SMs`` resident (the
  heuristic's own assumption, "we're using 128 threads per block": two CTAs per SM), launched in
  grid order; those past the first wave start when the first wave's shortest CTAs finish;
* **splits**: ``num_splits_heuristic`` ported exactly (:func:`num_splits`): one split once
  ``batch x kv_heads >= 0.8 x 2 x SMs``, otherwise enough to fill the waves;
* **sharing**: resident CTAs stream at equal rates, together at most the DRAM rate ``R`` (the
  generation table's own streaming rate over its rows larger than twice the L2,
  :mod:`tpsim.kernels.streaming`), each SM at most ``r`` (one SM's share of the attention FLOP rate,
  the tables' fitted ``attention_compute_efficiency``, over the 64-row padded query tile: ``4 x 64 x
  head_dim`` FLOP per token and KV head), so ``k`` CTAs progress at ``min(R, r x min(k, SMs)) / k``;
* **the batch**: the contexts as two classes matching their count, mean, variance and maximum
  (``p = var / (var + (max - mean)^2)`` of the sequences at the maximum, the rest at
  ``(mean - p max) / (1 - p)``): one long outlier exactly, any spread by its first two moments;
* **which CTAs wait**: sequence positions in the batch are unknown, so long and short CTAs are
  queued in proportion; a queued long CTA's late start counts with weight ``min(1, queued long
  CTAs)``, so the cost is continuous where the batch crosses one wave.

The model gives the kernel time of the batch and of a batch of the same size at the mean context;
the difference, never negative, is added to the table's uniform time at the mean (so a uniform batch
is priced exactly as the table says), and the sum is capped by the table's time at the maximum.
"""

from __future__ import annotations

from math import ceil

from tpsim.kernels.streaming import decode_streaming_rate

#: CTAs resident per SM, as the split heuristic assumes (flash_api.cpp: "We multiply number of SMs by 2
#: to hard-code the fact that we're using 128 threads per block")
CTAS_PER_SM = 2
#: KV tokens per block in the heuristic's block count (block_n for head_dim <= 128 in set_params_splitkv)
HEURISTIC_BLOCK_N = 128
#: FLOP per KV token and head of the decode tile: QK^T and PV over a query tile padded to 64 rows
TILE_ROWS = 64


def num_splits(batch_heads: int, num_sms: int, num_n_blocks: int, max_splits: int = 128) -> int:
    """FlashAttention 2's ``num_splits_heuristic`` (flash_api.cpp), called with ``2 x SMs``."""
    slots = CTAS_PER_SM * num_sms
    if batch_heads >= 0.8 * slots:
        return 1
    max_splits = min(max_splits, slots, num_n_blocks)
    eff = [0.0] * (max_splits + 1)
    best = 0.0
    for s in range(1, max_splits + 1):
        if s == 1 or -(-num_n_blocks // s) != -(-num_n_blocks // (s - 1)):
            waves = batch_heads * s / slots
            eff[s] = waves / ceil(waves)
            best = max(best, eff[s])
    for s in range(1, max_splits + 1):
        if (s == 1 or -(-num_n_blocks // s) != -(-num_n_blocks // (s - 1))) and eff[s] >= 0.85 * best:
            return s
    return 1


class DecodeSkew:
    """The extra decode-attention time of a batch's context spread on FlashAttention 2 (see the module doc)."""

    __slots__ = ("kv_heads", "head_bytes", "dram", "per_sm", "sms", "slots", "_splits", "_uniform", "_all_sms",
                 "_shapes")

    def __init__(self, kv_heads: int, head_bytes_per_token: float, dram_bytes_per_ns: float,
                 sm_bytes_per_ns: float, num_sms: int):
        self.kv_heads = kv_heads
        self.head_bytes = head_bytes_per_token  # KV bytes per token of one KV head (K and V)
        self.dram = dram_bytes_per_ns  # R
        self.per_sm = sm_bytes_per_ns  # r
        self.sms = num_sms
        self.slots = CTAS_PER_SM * num_sms
        self._splits: dict[tuple[int, int], int] = {}
        self._uniform: dict[tuple[int, int], tuple[float, float]] = {}
        rate = sm_bytes_per_ns * num_sms
        #: all CTAs' rate once every SM has one (``k >= SMs``): ``min(R, r x SMs)`` as :meth:`_per_byte_ns` computes it
        self._all_sms = rate if rate < dram_bytes_per_ns else dram_bytes_per_ns
        #: per (batch, splits): CTAs per sequence, the first wave's share (None: one wave), the uniform batch
        self._shapes: dict[tuple[int, int], tuple] = {}

    @classmethod
    def from_table(cls, grid, kv_bytes_per_token: float, l2_bytes: float, attn_flops: float, kv_heads: int,
                   head_dim: int, num_sms: int) -> DecodeSkew | None:
        """The term for a generation table's heads group (``grid``): DRAM's rate is the fastest the table streams
        caches over twice the L2 (None: no such row), an SM's the attention FLOP rate's share over the padded tile."""
        rate = decode_streaming_rate(grid, kv_bytes_per_token, l2_bytes)
        if rate is None:
            return None
        head_bytes = kv_bytes_per_token / kv_heads
        per_sm = attn_flops / num_sms * head_bytes / (4.0 * TILE_ROWS * head_dim)
        return cls(kv_heads, head_bytes, rate, per_sm, num_sms)

    def describe(self) -> dict:
        return {"dram_gbps": round(self.dram, 1), "per_sm_gbps": round(self.per_sm, 2), "num_sms": self.sms,
                "resident_ctas": self.slots}

    def splits(self, batch: int, max_seqlen: int) -> int:
        """The KV splits the kernel runs ``batch`` sequences with (a CUDA graph's padded batch) when the
        longest sequence it was set up for is ``max_seqlen`` (a CUDA graph's: ``max_model_len``, at capture)."""
        key = (batch, -(-max(max_seqlen, 1) // HEURISTIC_BLOCK_N))
        s = self._splits.get(key)
        if s is None:
            if len(self._splits) > 4096:
                self._splits.clear()
            s = self._splits[key] = num_splits(batch * self.kv_heads, self.sms, key[1])
        return s

    def _per_byte_ns(self, k: float) -> float:
        """ns per byte of each CTA while ``k`` CTAs are resident: ``k / min(R, r x min(k, SMs))``."""
        rate = self.per_sm * (k if k < self.sms else self.sms)
        return k / (rate if rate < self.dram else self.dram)

    def _pair(self, ca: float, wa: float, cb: float, wb: float) -> float:
        """Time for two classes of CTAs started together, ``count`` CTAs of ``w`` bytes each, to all finish under
        equal sharing: while ``k`` CTAs are resident each progresses at ``min(R, r x min(k, SMs)) / k`` bytes per
        ns, the shorter class first (ties: the smaller count first).  Written out, without lists or a sort: the
        hot path of every decode step (tests/test_decode_skew.py holds the general definition it equals)."""
        if not (ca > 0.0 and wa > 0.0):
            return wb * self._per_byte_ns(cb) if cb > 0.0 and wb > 0.0 else 0.0
        if not (cb > 0.0 and wb > 0.0):
            return wa * self._per_byte_ns(ca)
        if wb < wa or (wb == wa and cb < ca):  # the shorter CTAs first, as sorted() orders them
            ca, wa, cb, wb = cb, wb, ca, wa
        k = ca + cb
        t = wa * self._per_byte_ns(k)
        k -= ca
        return t + (wb - wa) * self._per_byte_ns(k) if k > 0.0 else t

    def _triple(self, ca: float, wa: float, cb: float, wb: float, cc: float, wc: float) -> float:
        """:meth:`_pair`'s sharing for three classes (the sum of counts in sorted order)."""
        if not (cc > 0.0 and wc > 0.0):
            return self._pair(ca, wa, cb, wb)
        if not (cb > 0.0 and wb > 0.0):
            return self._pair(ca, wa, cc, wc)
        if not (ca > 0.0 and wa > 0.0):
            return self._pair(cb, wb, cc, wc)
        a, b, c = (wa, ca), (wb, cb), (wc, cc)
        if b < a:
            a, b = b, a
        if c < b:
            b, c = c, b
            if b < a:
                a, b = b, a
        (wa, ca), (wb, cb), (wc, cc) = a, b, c
        k = ca + cb + cc
        t = wa * self._per_byte_ns(k)
        k -= ca
        if k > 0.0:
            t += (wb - wa) * self._per_byte_ns(k)
            k -= cb
            if k > 0.0:
                t += (wc - wb) * self._per_byte_ns(k)
        return t

    def _uniform_ns_per_byte(self, n: int, splits: int) -> tuple[float, float]:
        """A uniform batch's kernel time is linear in its CTAs' bytes: ``w x a + w x b`` (first wave, the rest;
        ``kernel_ns(n, 0.0, mean, mean, splits)`` with the same arithmetic), cached by ``(n, splits)``."""
        key = (n, splits)
        ab = self._uniform.get(key)
        if ab is None:
            per = self.kv_heads * splits
            cs = (n - 0.0) * per
            if n * per <= self.slots:
                ab = (self._per_byte_ns(cs) if cs > 0.0 else 0.0, 0.0)
            else:
                s1 = cs * (self.slots / (n * per))
                sq = cs - s1
                ab = (self._per_byte_ns(s1) if s1 > 0.0 else 0.0, self._per_byte_ns(sq) if sq > 0.0 else 0.0)
            if len(self._uniform) > 4096:
                self._uniform.clear()
            self._uniform[key] = ab
        return ab

    def kernel_ns(self, n: int, n_long: float, short: float, long: float, splits: int) -> float:
        """The fluid kernel time of ``n - n_long`` sequences of ``short`` tokens and ``n_long`` of ``long``."""
        per = self.kv_heads * splits
        total = n * per
        ws, wl = short * self.head_bytes / splits, long * self.head_bytes / splits
        cs, cl = (n - n_long) * per, n_long * per
        if total <= self.slots:
            return self._pair(cs, ws, cl, wl)
        first = self.slots / total  # the share of every class in the first wave
        s1, l1 = cs * first, cl * first
        sq, lq = cs - s1, cl - l1
        t1 = self._pair(s1, ws, l1, ws)  # until the first wave's short CTAs (and the longs' share) end
        without = self._pair(l1, wl - ws, sq, ws)
        if not lq:
            return t1 + without
        with_late = self._triple(l1, wl - ws, sq, ws, lq, wl)
        weight = lq if lq < 1.0 else 1.0
        return t1 + without + weight * (with_late - without)

    def uniform_kernel_ns(self, n: int, mean: float, splits: int) -> float:
        """``kernel_ns(n, 0.0, mean, mean, splits)``: a batch of ``n`` sequences of ``mean`` tokens."""
        w = mean * self.head_bytes / splits
        if not w > 0.0:
            return 0.0
        a, b = self._uniform_ns_per_byte(n, splits)
        return w * a + w * b

    def _shape(self, n: int, splits: int) -> tuple:
        """What :meth:`extra_ns` needs of a batch of ``n`` sequences run with ``splits`` splits, whatever their
        contexts (so cached): CTAs per sequence, the first wave's share of each class (None: one wave, as in
        :meth:`kernel_ns`), the uniform batch's ns per byte (:meth:`_uniform_ns_per_byte`), and the constants
        (one tuple read instead of five attributes; counts as floats, whose products and comparisons with the
        other floats are the int's exactly)."""
        per = self.kv_heads * splits
        total = n * per
        shape = (float(per), None if total <= self.slots else self.slots / total, *self._uniform_ns_per_byte(n, splits),
                 self.head_bytes, self._all_sms, float(self.sms), self.per_sm, self.dram)
        if len(self._shapes) > 4096:
            self._shapes.clear()
        self._shapes[(n, splits)] = shape
        return shape

    def extra_ns(self, n: int, ctx_sum: int, ctx_sq: int, ctx_max: int, splits: int) -> float:
        """Time the spread adds to a batch of ``n`` decodes whose contexts sum to ``ctx_sum``, their squares
        to ``ctx_sq``, with maximum ``ctx_max``, run with ``splits`` KV splits (:meth:`splits`); 0 for a
        uniform batch (or no spread statistics): ``kernel_ns(n, n_long, short, ctx_max, splits) -
        uniform_kernel_ns(n, mean, splits)``, never negative.

        Every decode step of a skewed batch asks this, so it is written out flat: :meth:`kernel_ns`'s phases
        (:meth:`_pair`, :meth:`_triple`, :meth:`_per_byte_ns`) inlined with the same operations in the same order
        where every class is present and the long CTAs are the longest (any batch of positive contexts); anything
        else takes :meth:`kernel_ns` itself.  Same floats bit for bit (tests/test_decode_skew.py checks ``==``
        against the general sharing rule): a run's outputs do not depend on which way a step was priced."""
        var_n2 = n * ctx_sq - ctx_sum * ctx_sum  # n^2 x variance
        if n < 2 or var_n2 <= 0 or ctx_max * n <= ctx_sum:
            return 0.0
        mean = ctx_sum / n
        gap = ctx_max - mean
        var = var_n2 / (n * n)
        p = var / (var + gap * gap)
        n_long = p * n
        if n_long >= n:
            return 0.0
        short = (mean - p * ctx_max) / (1.0 - p)
        shape = self._shapes.get((n, splits))
        if shape is None:
            shape = self._shape(n, splits)
        per, first, ua, ub, hb, full, sms, r, dram = shape
        ws, wl = short * hb / splits, ctx_max * hb / splits
        cs, cl = (n - n_long) * per, n_long * per  # cs > 0: n_long < n
        # k CTAs' ns per byte, k / min(R, r x min(k, SMs)), is below written out as
        # k / (full if k >= sms else (r * k if r * k < dram else dram))
        if first is None:  # one wave: _pair(cs, ws, cl, wl) with the short CTAs first
            if ws > 0.0 and wl > ws and cl > 0.0:
                k = cs + cl
                t = ws * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
                k -= cs
                if k > 0.0:
                    t = t + (wl - ws) * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
            else:
                t = self.kernel_ns(n, n_long, short, ctx_max, splits)
        else:  # past one wave: kernel_ns's phases, when each has all its classes and the late longs sort last
            s1, l1 = cs * first, cl * first
            sq, lq = cs - s1, cl - l1
            dw = wl - ws
            if ws > 0.0 and wl > ws and dw < wl and s1 > 0.0 and l1 > 0.0 and sq > 0.0 and lq >= 0.0:
                # _pair(s1, ws, l1, ws): its second phase moves wb - wa = 0 bytes, adding exactly 0.0
                k = s1 + l1
                t = ws * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
                # _pair(l1, dw, sq, ws) and _triple(l1, dw, sq, ws, lq, wl) share an order: the shorter first
                if ws < dw or (ws == dw and sq < l1):
                    c1, w1, c2, w2 = sq, ws, l1, dw
                else:
                    c1, w1, c2, w2 = l1, dw, sq, ws
                k = c1 + c2
                without = w1 * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
                k -= c1
                if k > 0.0:
                    without = without + (w2 - w1) * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
                if lq:  # with the late long CTAs (weight min(1, lq)), as kernel_ns
                    k = c1 + c2 + lq
                    late = w1 * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
                    k -= c1
                    if k > 0.0:
                        late += (w2 - w1) * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
                        k -= c2
                        if k > 0.0:
                            late += (wl - w2) * (k / (full if k >= sms else (r * k if r * k < dram else dram)))
                    t = t + without + (lq if lq < 1.0 else 1.0) * (late - without)
                else:
                    t = t + without
            else:
                t = self.kernel_ns(n, n_long, short, ctx_max, splits)
        w = mean * hb / splits
        extra = t - (w * ua + w * ub if w > 0.0 else 0.0)
        return extra if extra > 0.0 else 0.0
