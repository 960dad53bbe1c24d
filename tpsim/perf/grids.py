"""The token and context grids ``tpsim profile`` measures on (no torch needed to read them).

``tokens``: token counts of the token-indexed ops; ``sequences``: sequence
counts of the LM head and sampler; attention: every (``prefill_chunk``,
``kv_prefill``) pair with no decodes, every (``n_decode``, ``kv_decode``)
pair with no prefill, and the ``mixed`` sub-grid of all four, keeping
contexts within the model's window and decode KV within ``max_kv_tokens``
(memory).
"""

from __future__ import annotations

_DEFAULT_TOKENS = (list(range(1, 17)) + list(range(24, 129, 8)) + list(range(160, 513, 32))
                   + list(range(640, 2049, 128)) + [2560, 3072, 4096, 6144, 8192])
GRIDS = {
    # seconds on a CPU, for tests
    "tiny": {
        "tokens": [1, 2, 4, 8, 16, 32],
        "sequences": [1, 2, 4, 8],
        "prefill_chunk": [16, 32], "kv_prefill": [0, 16, 48],
        "n_decode": [1, 2, 4], "kv_decode": [16, 32, 64],
        "mixed": {"prefill_chunk": [16, 32], "kv_prefill": [0, 48], "n_decode": [1, 4], "kv_decode": [16, 64]},
        "max_kv_tokens": 1 << 12,
    },
    # minutes on a GPU
    "small": {
        "tokens": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
        "sequences": [1, 2, 4, 8, 16, 32, 64, 128, 256],
        "prefill_chunk": [16, 64, 256, 1024, 2048], "kv_prefill": [0, 256, 1024, 4096, 16384],
        "n_decode": [1, 2, 4, 8, 16, 32, 64, 128, 256], "kv_decode": [16, 128, 512, 1024, 2048, 4096, 8192, 16384],
        "mixed": {"prefill_chunk": [64, 512, 2048], "kv_prefill": [0, 4096], "n_decode": [1, 16, 128],
                  "kv_decode": [512, 4096]},
        "max_kv_tokens": 1 << 21,
    },
    "default": {
        "tokens": _DEFAULT_TOKENS,
        "sequences": list(range(1, 17)) + list(range(24, 129, 8)) + list(range(160, 513, 32)),
        "prefill_chunk": [16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192],
        "kv_prefill": [0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768],
        "n_decode": [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512],
        "kv_decode": [16, 64, 128, 256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 32768],
        "mixed": {"prefill_chunk": [64, 256, 512, 1024, 2048], "kv_prefill": [0, 1024, 4096, 16384],
                  "n_decode": [1, 4, 16, 64, 128, 256], "kv_decode": [128, 512, 2048, 8192]},
        "max_kv_tokens": 1 << 21,
    },
}


def attention_shapes(grid: dict, max_position: int) -> list[tuple[int, int, int, int]]:
    """(prefill_chunk, kv_prefill, n_decode, kv_decode) rows of a grid, within the model's context and the KV cap."""
    cap = grid["max_kv_tokens"]
    rows = []
    for pc in grid["prefill_chunk"]:
        for kp in grid["kv_prefill"]:
            if pc + kp <= max_position:
                rows.append((pc, kp, 0, 0))
    for nd in grid["n_decode"]:
        for kd in grid["kv_decode"]:
            if kd <= max_position and nd * kd <= cap:
                rows.append((0, 0, nd, kd))
    m = grid.get("mixed") or {}
    for pc in m.get("prefill_chunk", []):
        for kp in m.get("kv_prefill", []):
            for nd in m.get("n_decode", []):
                for kd in m.get("kv_decode", []):
                    if pc + kp <= max_position and kd <= max_position and nd * kd + kp + pc <= cap:
                        rows.append((pc, kp, nd, kd))
    return rows
