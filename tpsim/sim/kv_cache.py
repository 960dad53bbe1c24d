"""Paged KV cache of one instance: fixed-size blocks, all-or-nothing allocation.

Two pools share one interface:

* :class:`BlockCounter` when prefix caching is off: only the number of free
  blocks matters, so it is a counter (fast).
* :class:`PrefixCachingPool` mirrors vLLM V1's ``BlockPool``: blocks have a
  reference count; free blocks sit in an LRU queue (allocation takes the head,
  freeing appends to the tail, a request's blocks are freed last-block-first);
  a full block of known token ids gets a chained hash and stays findable in
  the index until its block is reused.  As in vLLM's ``allocate_slots``, a request's full blocks
  are cached when they are allocated for a step (the tokens scheduled in it included), so a
  request admitted later in the same step already finds them.  A lookup walks the request's hash chain
  and stops at the first miss; at least one token is always recomputed.

Block ids are unobservable: only counts and hashes influence the simulation.
The counters (free blocks, peak used, prefix-cache queries and hits) change only
through the pool's methods; ``take`` serves the decode cohort, whose members'
block counts are derived rather than stored (counting pool only).
"""

from __future__ import annotations

from collections import OrderedDict

from tpsim.sim.request import Request

HASH_SEED = 0x9E3779B97F4A7C15


def block_hashes(token_ids: list, block_size: int) -> list[int]:
    """Chained hashes of the full blocks of ``token_ids`` (deterministic: ints and tuples)."""
    out = []
    parent = HASH_SEED
    for block in zip(*[iter(token_ids)] * block_size):  # the full blocks' ids as tuples, at C speed
        parent = hash((parent, block))
        out.append(parent)
    return out


class BlockCounter:
    """KV pool without prefix caching: counts blocks, nothing else."""

    caching = False

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_free = num_blocks
        self.peak_used = 0
        # prefix-cache statistics of admitted requests (vLLM's PrefixCacheStats): see record_lookup
        self.hit_tokens = 0
        self.queried_tokens = 0

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def lookup(self, req: Request) -> tuple[tuple, int]:
        return (), 0

    def can_fit(self, tokens: int) -> bool:
        return -(-tokens // self.block_size) <= self.num_free

    def allocate(self, req: Request, total_tokens: int, hits=()) -> bool:
        need = -(-total_tokens // self.block_size) - req.nblocks
        if need <= 0:
            return True
        if need > self.num_free:
            return False
        self.num_free -= need
        req.nblocks += need
        used = self.num_blocks - self.num_free
        if used > self.peak_used:
            self.peak_used = used
        return True

    def take(self, n: int) -> bool:
        """Take ``n`` blocks not tracked per request (the decode cohort derives its members'
        block counts), all or nothing."""
        if n > self.num_free:
            return False
        self.num_free -= n
        used = self.num_blocks - self.num_free
        if used > self.peak_used:
            self.peak_used = used
        return True

    def free(self, req: Request) -> None:
        self.num_free += req.nblocks
        req.nblocks = 0

    def record_lookup(self, queried_tokens: int, hit_tokens: int) -> None:
        """An admitted request's prefix-cache look-up: its tokens, and those found cached."""
        self.queried_tokens += queried_tokens
        self.hit_tokens += hit_tokens

    def register(self, req: Request, tokens: int) -> None:
        return None


class PrefixCachingPool(BlockCounter):
    """vLLM V1's block pool with automatic prefix caching."""

    caching = True

    def __init__(self, num_blocks: int, block_size: int):
        super().__init__(num_blocks, block_size)
        # Blocks are created on first use, so memory follows the blocks a run touches, not the
        # cache's size.  Never-used blocks stand, in id order, at the head of vLLM's free queue
        # (freed blocks join its tail), so taking them first is exactly vLLM's order.
        self.fresh = num_blocks  # blocks never used yet
        self.ref: list[int] = []  # per created block
        self.block_hash: list[int | None] = []
        self.free_queue: OrderedDict[int, None] = OrderedDict()  # freed blocks, least recently freed first
        self.index: dict[int, int] = {}

    def _hashes(self, req: Request) -> list[int]:
        if req.hashes is None:
            req.hashes = block_hashes(req.token_ids, self.block_size) if req.token_ids else []
        return req.hashes

    def lookup(self, req: Request) -> tuple[list, int]:
        """Cached leading blocks of ``req`` (at least one token left to compute)."""
        if req.token_ids is None:
            return [], 0
        hashes = self._hashes(req)
        limit = min(len(hashes), (req.num_tokens - 1) // self.block_size)
        hits = []
        index = self.index
        for i in range(limit):
            block = index.get(hashes[i])
            if block is None:
                break
            hits.append(block)
        return hits, len(hits) * self.block_size

    def allocate(self, req: Request, total_tokens: int, hits=()) -> bool:
        blocks = req.blocks
        need = -(-total_tokens // self.block_size) - len(blocks) - len(hits)
        if need < 0:
            need = 0
        ref = self.ref
        evictable = 0
        for b in hits:
            if ref[b] == 0:
                evictable += 1
        if need + evictable > self.num_free:
            return False
        free_queue = self.free_queue
        for b in hits:
            if ref[b] == 0:
                del free_queue[b]
            ref[b] += 1
            blocks.append(b)
        fresh = need if need < self.fresh else self.fresh
        if fresh:
            first = len(ref)
            ref.extend([1] * fresh)
            self.block_hash.extend([None] * fresh)
            blocks.extend(range(first, first + fresh))
            self.fresh -= fresh
        for _ in range(need - fresh):
            blocks.append(self._reuse_free_block())
        self.num_free -= need + evictable
        req.nblocks = len(blocks)
        used = self.num_blocks - self.num_free
        if used > self.peak_used:
            self.peak_used = used
        if req.token_ids is not None:
            self.register(req, total_tokens)
        return True

    def open_blocks(self, reqs: list[Request]) -> None:
        """One more block for each of ``reqs``, in order (decode-cohort members whose next token opens a
        block; the caller checked they fit): what ``allocate`` does for each, without a call per block."""
        n = len(reqs)
        ref = self.ref
        fresh = n if n < self.fresh else self.fresh
        if fresh:
            first = len(ref)
            ref.extend([1] * fresh)
            self.block_hash.extend([None] * fresh)
            self.fresh -= fresh
            for i in range(fresh):
                r = reqs[i]
                r.blocks.append(first + i)
                r.nblocks += 1
        if fresh < n:
            for r in reqs[fresh:]:
                r.blocks.append(self._reuse_free_block())
                r.nblocks += 1
        self.num_free -= n
        used = self.num_blocks - self.num_free
        if used > self.peak_used:
            self.peak_used = used

    def _reuse_free_block(self) -> int:
        """The least recently freed block, referenced once; the cached content it held is evicted."""
        b = self.free_queue.popitem(last=False)[0]
        h = self.block_hash[b]
        if h is not None:
            if self.index.get(h) == b:
                del self.index[h]
            self.block_hash[b] = None
        self.ref[b] = 1
        return b

    def take(self, n: int) -> bool:
        raise TypeError("a prefix-caching pool hands out blocks by id: use allocate()")

    def free(self, req: Request) -> None:
        ref = self.ref
        free_queue = self.free_queue
        queued = len(free_queue)
        for b in reversed(req.blocks):
            n = ref[b] - 1
            ref[b] = n
            if not n:
                free_queue[b] = None
        self.num_free += len(free_queue) - queued  # the blocks released (none was queued already)
        req.blocks = []
        req.nblocks = 0
        req.num_registered = 0

    def register_filled(self, reqs, tokens_after: int) -> list:
        """``register(r, r.offset + tokens_after)`` for each decode-cohort member of ``reqs``, in order, without
        a call per member (a member's block fills every ``block_size`` steps; most fill one block).  Returns the
        members whose token ids are all registered now: nothing of theirs can be registered again."""
        bs = self.block_size
        block_hash = self.block_hash
        index = self.index
        spent = []
        for r in reqs:
            done = r.num_registered
            full = (r.offset + tokens_after) // bs
            if full <= done:
                continue
            hashes = r.hashes if r.hashes is not None else self._hashes(r)
            blocks = r.blocks
            if full > len(hashes):
                full = len(hashes)
            if full > len(blocks):
                full = len(blocks)
            while done < full:
                b = blocks[done]
                if block_hash[b] is None:
                    h = hashes[done]
                    if h not in index:
                        index[h] = b
                        block_hash[b] = h
                done += 1
            r.num_registered = done
            if done == len(hashes):
                spent.append(r)
        return spent

    def register(self, req: Request, tokens: int) -> None:
        """Make the full blocks of ``req``'s first ``tokens`` tokens (computed, or scheduled in the step
        being planned) findable by later requests."""
        if req.token_ids is None:
            return
        hashes = self._hashes(req)
        full = min(tokens // self.block_size, len(hashes), len(req.blocks))
        if full <= req.num_registered:
            return
        block_hash = self.block_hash
        index = self.index
        done = req.num_registered
        for b, h in zip(req.blocks[done:full], hashes[done:full]):
            if block_hash[b] is None and h not in index:
                index[h] = b
                block_hash[b] = h
        req.num_registered = full
