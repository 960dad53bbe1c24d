"""How fast a kernel streams its operand from DRAM, read off the table rows that could not hit L2.

AIConfigurator times a kernel by replaying it on the same buffers (docs/notes/aic-database.md §8.4,
§9.3), so an operand that fits in the GPU's L2 stays there from one replay to the next: on the RTX PRO
6000 (128 MiB of L2) the decode-attention rows whose KV cache fits and the fused-MoE rows whose
touched experts fit beat the DRAM roofline, by up to 2.4x and 1.9x (§10.6).  In serving a layer's KV
cache and weights are read once per step while the other layers' KV and weights stream through L2 in
between, so they come from DRAM.  A row whose operand is more than twice the L2 cannot have been
served from it, and those rows give a floor for every query::

    t >= floor_ns + bytes x ns_per_byte

``floor_ns``: the fastest measurement (the kernel's launch and latency); ``ns_per_byte``: the inverse
of the largest ``bytes / (t - floor_ns)`` over those rows, so that none of them lies below the floor.
The floor is given only where the table shows that its replays were served from L2: some row of at
most twice the L2 moved its operand faster than that DRAM rate could (RTX PRO 6000: 732 of 5,880
decode-attention and 149 of 1,133 MoE rows, up to 2.1x; H100, H200, B200, A100: none, so their
tables, whose small rows overlap the launch with the streaming, are left as measured).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

#: an operand larger than this many L2s cannot have stayed in L2 between two replays
L2_MULTIPLE = 2.0


class StreamingFloor(msgspec.Struct, frozen=True):
    """``floor_ns + bytes x ns_per_byte``: a kernel reading ``bytes`` from DRAM takes at least this."""

    floor_ns: float
    ns_per_byte: float
    rows: int  # table rows (operand > 2 x L2) it was derived from
    from_l2: int  # rows (operand <= 2 x L2) faster than the floor's DRAM rate: served from L2 by the replay

    def ns(self, nbytes: float) -> float:
        return self.floor_ns + nbytes * self.ns_per_byte

    @property
    def gbps(self) -> float:
        """The streaming rate in GB/s (1e9 B/s)."""
        return 1.0 / self.ns_per_byte


def streaming_floor(samples: Iterable[tuple[float, float]], floor_ns: float, l2_bytes: float) -> StreamingFloor | None:
    """The floor from measured ``(operand bytes, ns)`` rows; None where no row's operand exceeds 2 x L2, or
    where no smaller row beat that DRAM rate (nothing shows the replay was served from L2)."""
    samples = list(samples)
    limit = L2_MULTIPLE * l2_bytes
    per_byte = [(t - floor_ns) / nbytes for nbytes, t in samples if nbytes > limit and t > floor_ns]
    if not per_byte:
        return None
    # a hair below the binding row, so that row stays the table's own measurement after rounding
    ns_per_byte = min(per_byte) * (1.0 - 1e-12)
    from_l2 = sum(1 for nbytes, t in samples if nbytes <= limit and nbytes * ns_per_byte > t)
    return StreamingFloor(floor_ns, ns_per_byte, len(per_byte), from_l2) if from_l2 else None


def decode_attention_floor(grid, kv_bytes_per_token: float, l2_bytes: float) -> StreamingFloor | None:
    """Decode attention of one heads group (a generation table grid over batch x context): its rows'
    KV bytes are ``batch x context x kv_bytes_per_token``."""
    batches, contexts = grid.axes
    samples = [(b * kv * kv_bytes_per_token, grid.measured((i, j)))
               for i, b in enumerate(batches) for j, kv in enumerate(contexts) if grid.measured((i, j)) is not None]
    return streaming_floor(samples, grid.floor_ns, l2_bytes)


def decode_streaming_rate(grid, kv_bytes_per_token: float, l2_bytes: float) -> float | None:
    """The fastest rate (bytes/ns) at which the generation table's rows whose KV cache exceeds twice the L2
    stream it once the table's fastest call is taken off: DRAM's rate for this kernel, with or without
    evidence of L2-served replays (None: no such row)."""
    batches, contexts = grid.axes
    limit = L2_MULTIPLE * l2_bytes
    rates = []
    for i, b in enumerate(batches):
        for j, kv in enumerate(contexts):
            t = grid.measured((i, j))
            nbytes = b * kv * kv_bytes_per_token
            if t is not None and nbytes > limit and t > grid.floor_ns:
                rates.append(nbytes / (t - grid.floor_ns))
    return max(rates) if rates else None
