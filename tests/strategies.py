"""Hypothesis strategies shared by the tests: one definition of a valid step shape, so that every property
test over the latency models draws the same space (prefill chunks with cached context, uniform decodes)."""

from __future__ import annotations

from hypothesis import strategies as st

from tpsim.perf.base import BatchShape


@st.composite
def batch_shapes(draw, max_prefills: int = 3, max_chunk: int = 3000, max_decodes: int = 200,
                 min_decodes: int = 0, max_ctx: int = 8000) -> BatchShape:
    """A step: up to ``max_prefills`` prefill chunks (tokens, cached context before them) and
    ``min_decodes``..``max_decodes`` decodes of one context length each; never empty."""
    prefill = tuple(draw(st.lists(st.tuples(st.integers(1, max_chunk), st.integers(0, max_ctx)),
                                  max_size=max_prefills)))
    n_dec = draw(st.integers(min_decodes if prefill else max(1, min_decodes), max_decodes))
    ctx = draw(st.integers(1, max_ctx))
    return BatchShape(prefill, n_dec, n_dec * ctx, ctx if n_dec else 0, n_dec + len(prefill))
