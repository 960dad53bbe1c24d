"""An alpha-beta all-reduce that follows vLLM's choice of algorithm, fitted to measured tables.

vLLM 0.19 picks its all-reduce per call by message size (docs/notes/vllm-0.19-tp-execution.md,
section 1.4): its custom all-reduce one-shot below a size that depends on the GPU generation and
TP degree, two-shot above it, then torch symmetric memory (SM 9.0/10.x), then NCCL -- whose own
protocols change with size again.  Each of those pieces is a straight line in message bytes,
``t = a + b S``, fitted here to the GPU's measured table at its catalogued link; on another link
the pieces keep their shape and scale with it::

    t(S; bw, lat) = max(0, a + k (lat - lat_cat) + b S bw_cat / bw)

``k`` counts the link latencies the algorithm pays in sequence (one-shot 1, two-shot 2, NCCL's
ring 2(n-1)).  A piece whose line misses its points by more than :data:`SPLIT_ERROR` is split
at its worst point (NCCL's protocol switches), so on the catalogued link the model reproduces the
measured curve within a few per cent from 4 K to 32 M elements.  All-gathers use NCCL's table the
same way (k = n - 1).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

KiB = 1 << 10
MiB = 1 << 20
#: elements fitted: 4 K .. 32 M (what a step's all-reduce moves, from decode to long prefills)
FIT_ELEMENTS = tuple(4096 * 2 ** i for i in range(14))
SPLIT_ERROR = 0.05
_INF = float("inf")
#: vLLM's all-reduce pieces by message bytes (bf16), per SM version and TP degree (section 1.4)
_VLLM_PIECES = {
    "9.0": {2: ((8 * MiB, "one_shot"), (64 * MiB, "symm_mem"), (_INF, "nccl")),
            4: ((512 * KiB, "one_shot"), (8 * MiB, "two_shot"), (32 * MiB, "symm_mem"), (_INF, "nccl")),
            8: ((256 * KiB, "one_shot"), (64 * MiB, "symm_mem"), (_INF, "nccl"))},
    "10.0": {2: ((2 * MiB, "one_shot"), (8 * MiB, "symm_mem"), (_INF, "nccl")),
             4: ((512 * KiB, "one_shot"), (2 * MiB, "two_shot"), (32 * MiB, "symm_mem"), (_INF, "nccl")),
             8: ((256 * KiB, "one_shot"), (1 * MiB, "two_shot"), (128 * MiB, "symm_mem"), (_INF, "nccl"))},
    "8.0": {2: ((8 * MiB, "one_shot"), (_INF, "nccl")),
            4: ((512 * KiB, "one_shot"), (8 * MiB, "two_shot"), (_INF, "nccl")),
            8: ((256 * KiB, "one_shot"), (8 * MiB, "two_shot"), (_INF, "nccl"))},
}
#: PCIe-only GPUs: custom all-reduce for 2 GPUs (with P2P), NCCL beyond
_PCIE_PIECES = {2: ((8 * MiB, "one_shot"), (_INF, "nccl")), 4: ((_INF, "nccl"),), 8: ((_INF, "nccl"),)}


def vllm_pieces(compute_capability: str, n: int, nvlink: bool) -> tuple:
    table = _VLLM_PIECES.get(compute_capability) if nvlink else _PCIE_PIECES
    if table is None:
        table = _VLLM_PIECES["8.0"]
    return table.get(n) or table[max(k for k in table if k <= n)] if n >= 2 else ()


def latency_hops(algorithm: str, n: int) -> int:
    """Link latencies paid in sequence: one-shot reads peers once, two-shot twice, NCCL's ring 2(n-1)."""
    return {"one_shot": 1, "two_shot": 2, "symm_mem": 2}.get(algorithm, 2 * (n - 1))


@dataclass(frozen=True)
class Piece:
    upper_bytes: float  # the piece covers messages below this size
    algorithm: str
    a_ns: float  # intercept at the catalogued link
    b_ns_per_byte: float  # slope at the catalogued link
    hops: int


@dataclass(frozen=True)
class FittedCurve:
    """One collective at one GPU count: pieces fitted to measured points, and their worst error."""

    pieces: tuple[Piece, ...]
    max_error: float
    source: str

    def time_ns(self, nbytes: float, bw_ratio: float, dlat_ns: float) -> float:
        """``bw_ratio`` = catalogued / configured bandwidth; ``dlat_ns`` = configured - catalogued latency."""
        uppers = [p.upper_bytes for p in self.pieces]
        p = self.pieces[min(bisect_right(uppers, nbytes), len(self.pieces) - 1)]
        t = p.a_ns + p.hops * dlat_ns + p.b_ns_per_byte * nbytes * bw_ratio
        return t if t > 0.0 else 0.0


def _line(points) -> tuple[float, float]:
    """``t = a + b S`` minimising the squared relative error."""
    sw = sum(1 / t ** 2 for _, t in points)
    ss = sum(s / t ** 2 for s, t in points)
    sss = sum(s * s / t ** 2 for s, t in points)
    st = sum(1 / t for _, t in points)
    sst = sum(s / t for s, t in points)
    det = sw * sss - ss * ss
    if len(points) < 2 or det <= 0:
        return points[0][1], 0.0
    a = (st * sss - ss * sst) / det
    b = (sw * sst - ss * st) / det
    if b < 0:  # flat piece (latency-bound): its mean
        return sum(t for _, t in points) / len(points), 0.0
    return a, b


def _fit_range(points, upper: float, algorithm: str, n: int) -> tuple[list[Piece], float]:
    a, b = _line(points)
    err = max(abs((a + b * s) / t - 1.0) for s, t in points)
    if err <= SPLIT_ERROR or len(points) < 3:
        return [Piece(upper, algorithm, a, b, latency_hops(algorithm, n))], err
    worst = max(range(1, len(points) - 1), key=lambda i: abs((a + b * points[i][0]) / points[i][1] - 1.0))
    left, right = points[:worst + 1], points[worst + 1:]
    if len(right) < 2:
        left, right = points[:worst], points[worst:]
    if len(left) < 2 or len(right) < 2:
        return [Piece(upper, algorithm, a, b, latency_hops(algorithm, n))], err
    split = (left[-1][0] + right[0][0]) / 2.0
    lp, le = _fit_range(left, split, algorithm, n)
    rp, re = _fit_range(right, upper, algorithm, n)
    return lp + rp, max(le, re)


def fit_curve(points: list[tuple[float, float]], pieces: tuple, n: int, source: str) -> FittedCurve:
    """Fit ``(bytes, ns)`` points piece by piece (vLLM's pieces, split where NCCL switches protocol)."""
    out: list[Piece] = []
    worst = 0.0
    lower = 0.0
    for upper, algorithm in pieces:
        inside = [p for p in points if lower <= p[0] < upper]
        lower = upper
        if not inside:
            continue
        fitted, err = _fit_range(inside, upper, algorithm, n)
        out += fitted
        worst = max(worst, err)
    if not out:
        raise ValueError("no measured points to fit")
    last = out[-1]
    out[-1] = Piece(_INF, last.algorithm, last.a_ns, last.b_ns_per_byte, last.hops)
    return FittedCurve(tuple(out), worst, source)
