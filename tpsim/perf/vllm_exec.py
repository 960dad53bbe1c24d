"""How vLLM 0.19 executes one engine step: CUDA-graph mode and padding, attention backend, fusions.

Facts from vLLM 0.19.0's source, cited in docs/notes/vllm-0.19-tp-execution.md (section numbers
below refer to it); every latency model that wants to follow vLLM's execution reads them here.

* CUDA graphs (section 3): ``cudagraph_mode = FULL_AND_PIECEWISE``; capture sizes 1, 2, 4, then
  multiples of 8 below 256, then multiples of 16 up to ``min(2 x max_num_seqs, 512,
  max_num_batched_tokens)``; the largest of them is the graph bound (vLLM truncates
  ``max_cudagraph_capture_size`` to it).  A step of T tokens with T at most that size runs padded to the next
  capture size: as one FULL graph when every request decodes one token (and T <= max_num_seqs),
  else PIECEWISE (graphs between the attention ops; attention and the KV-cache write run eager
  on the unpadded tokens).  Larger steps run eager, unpadded.
* Attention backend (section 4): FlashAttention 3 on SM 9.x, FlashInfer on SM 10.x, else
  FlashAttention 2.  FlashAttention runs a mixed step as one varlen kernel; FlashInfer splits
  it into a decode and a prefill call.
* Fused all-reduce + RMSNorm (section 2.3): on SM 9.0 and 10.x with TP > 1, PP = 1 and DP = 1,
  every all-reduce of a step of at most ``max_size / (hidden x 2 B)`` tokens is one FlashInfer
  kernel that also does the residual add and RMSNorm.
* Data parallelism of an MoE model (``docs/notes/vllm-0.19-moe-dp-ep.md`` §3.2,
  ``vllm/v1/worker/dp_utils.py``): before each step the DP ranks exchange their token counts and
  graph modes; the step runs in the *lowest* mode of any rank (eager < piecewise < full) and,
  unless that is eager, every rank pads to the largest padded count.  An idle rank runs a dummy
  step of one decode token (``execute_dummy_batch``), padded like the others.
"""

from __future__ import annotations

from bisect import bisect_left

import msgspec

FULL, PIECEWISE, EAGER = "full", "piecewise", "eager"
#: vLLM's upper bound on the largest CUDA-graph capture size (``max_cudagraph_capture_size``)
MAX_CAPTURE = 512
#: FlashInfer all-reduce + RMSNorm fusion: largest message (MiB) by SM and TP (section 2.3)
_FUSION_MAX_MIB = {"9.0": {2: 64, 4: 2, 8: 0.5}, "10.0": {2: 64, 4: 32, 8: 1}, "10.3": {2: 64, 4: 64, 8: 2}}


def capture_sizes(max_size: int) -> tuple[int, ...]:
    sizes = [s for s in (1, 2, 4) if s <= max_size]
    sizes += range(8, min(256, max_size + 1), 8)
    sizes += range(256, max_size + 1, 16)
    return tuple(sizes)


class GraphPolicy(msgspec.Struct, frozen=True):
    """The CUDA-graph rule of one engine configuration."""

    max_size: int
    max_num_seqs: int
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, max_num_seqs: int, max_num_batched_tokens: int) -> GraphPolicy:
        sizes = capture_sizes(min(2 * max_num_seqs, MAX_CAPTURE, max_num_batched_tokens))
        # vLLM truncates max_cudagraph_capture_size to the largest size it captures (vllm/config/vllm.py
        # _set_cudagraph_sizes): a step between that size and the nominal bound runs eager
        return cls(sizes[-1] if sizes else 0, max_num_seqs, sizes)

    def mode(self, num_tokens: int, pure_decode: bool) -> tuple[str, int]:
        """(FULL | PIECEWISE | EAGER, the token count the step's dense ops run with)."""
        if num_tokens > self.max_size or not self.sizes:
            return EAGER, num_tokens
        padded = self.sizes[bisect_left(self.sizes, num_tokens)]
        if pure_decode and num_tokens <= self.max_num_seqs:
            return FULL, padded
        return PIECEWISE, padded


def attention_backend(compute_capability: str) -> str:
    """vLLM 0.19's default attention backend on a GPU (``fa3``, ``flashinfer`` or ``fa2``)."""
    major = compute_capability.split(".")[0] if compute_capability else ""
    if major == "9":
        return "fa3"
    if major == "10":
        return "flashinfer"
    return "fa2"


def fused_allreduce_max_tokens(compute_capability: str, tp: int, pp: int, dp: int, hidden: int,
                               act_bytes: int, max_num_batched_tokens: int) -> int:
    """Largest step (tokens) whose all-reduces are fused with RMSNorm; 0 where the fusion is off."""
    limits = _FUSION_MAX_MIB.get(compute_capability)
    if limits is None or tp < 2 or pp != 1 or dp != 1 or tp not in limits:
        return 0
    return min(int(limits[tp] * (1 << 20) // (hidden * act_bytes)), max_num_batched_tokens)


_MODE_RANK = {EAGER: 0, PIECEWISE: 1, FULL: 2}


def dp_synchronize(plans: list[tuple[str, int, int]]) -> tuple[str, tuple[int, ...]]:
    """vLLM's ``coordinate_batch_across_dp``: each rank's ``(mode, padded tokens, tokens)`` -> the
    step's mode and the token count each rank's dense ops run with."""
    mode = min((p[0] for p in plans), key=_MODE_RANK.__getitem__)
    if mode == EAGER:
        return mode, tuple(p[2] for p in plans)
    top = max(p[1] for p in plans)
    return mode, (top,) * len(plans)
