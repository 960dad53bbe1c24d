"""The decode cohort: running requests that simply decode one token per step, counters derived.

A cohort member's counters are not stored but derived from the step index ``s``: before step
``s`` it has ``num_computed = offset + s`` tokens in the KV cache and has generated
``gen_base + (s - base_step)`` tokens.  The cohort keeps what a step needs in aggregate (how
many members, the sum of their offsets and of their squares, from which the batch's context sum and
spread follow; the longest context when the latency model asks) and what the next *event* is, so that per-request
work happens only at events:

* a member's last step (it finishes);
* counting KV pool: a member's next token opens a new block (members counted by offset modulo
  the block size, so a step's new blocks are one look-up);
* prefix-caching pool: a member's next token opens a block every ``block_size`` steps, at the
  steps where ``offset + s`` is a multiple of the block size, and the step before it the block
  that filled is registered in the prefix-cache index.  Members are kept by offset modulo the
  block size, so a step's allocations and registrations are one bucket each, taken for the whole
  cohort at once (in admission order, as vLLM walks its running list).

Finishes and the longest context sit in lazy heaps (:mod:`tpsim.sim.lazy_heap`): a request's
epoch changes when it joins and when it leaves, which makes every entry pushed before stale.
"""

from __future__ import annotations

from tpsim.sim.kv_cache import BlockCounter
from tpsim.sim.lazy_heap import LazyHeap
from tpsim.sim.request import BY_ADMISSION, Request

INF = float("inf")


class DecodeCohort:
    __slots__ = ("block_size", "counting", "track_ctx_max", "n", "off_sum", "off_sq", "bucket",
                 "opens", "fills", "finishes", "newest", "longest")

    def __init__(self, block_size: int, counting: bool, track_ctx_max: bool):
        self.block_size = block_size
        self.counting = counting  # counting pool (blocks by offset bucket), else per-request block events
        self.track_ctx_max = track_ctx_max  # the latency model needs the longest context of a step
        self.n = 0  # members
        self.off_sum = 0  # sum of members' offsets: their context sum at step s is off_sum + n * (s + 1)
        self.off_sq = 0  # sum of their squares (the contexts' spread: ctx_sq_sum)
        self.bucket = [0] * block_size  # counting pool: members by offset mod block size
        # prefix-caching pool, by offset mod block size: every member {request: first step it opens a
        # block}, and the members with token ids (whose full blocks are registered)
        self.opens: list[dict[Request, int]] = [{} for _ in range(block_size)] if not counting else []
        self.fills: list[dict[Request, None]] = [{} for _ in range(block_size)] if not counting else []
        self.finishes = LazyHeap()  # (last step, admit_seq, epoch, request)
        self.newest = LazyHeap()  # (-admit_seq, epoch, request)
        self.longest = LazyHeap()  # (-offset, admit_seq, epoch, request), if track_ctx_max

    # ------------------------------------------------------------------ membership
    def join(self, r: Request, s: int) -> None:
        """``r`` decodes one token per step from step ``s`` on."""
        r.cohort = True
        r.epoch += 1
        r.base_step = s
        r.offset = off = r.num_computed - s
        r.gen_base = r.generated
        self.n += 1
        self.off_sum += off
        self.off_sq += off * off
        ep = r.epoch
        seq = r.admit_seq
        self.finishes.push((s + r.output - r.generated - 1, seq, ep, r))
        self.newest.push((-seq, ep, r))
        if self.track_ctx_max:
            self.longest.push((-off, seq, ep, r))
        if len(self.newest.entries) > 2 * self.n + 64:  # one live entry per member: the rest are stale
            self.finishes.compact()
            self.newest.compact()
            self.longest.compact()
        k = off % self.block_size
        if self.counting:
            self.bucket[k] += 1
        else:
            # the first step whose token does not fit: s, or up to block_size steps later when the
            # member joins holding the block this step's token goes into
            self.opens[k][r] = len(r.blocks) * self.block_size - off
            if r.token_ids is not None:
                self.fills[k][r] = None

    def materialize(self, r: Request, s: int) -> None:
        """Make ``r``'s counters explicit as of the start of step ``s`` and leave the cohort."""
        steps = s - r.base_step
        r.num_computed = r.offset + s
        r.generated = r.gen_base + steps
        r.num_tokens = r.num_computed + 1
        if steps > 0:
            r.emit(r.base_step, steps)
        k = r.offset % self.block_size
        if self.counting:
            r.nblocks = -(-r.num_computed // self.block_size)
            self.bucket[k] -= 1
        else:
            del self.opens[k][r]
            self.fills[k].pop(r, None)
        r.cohort = False
        r.epoch += 1  # every heap entry of this membership is stale now
        self.n -= 1
        self.off_sum -= r.offset
        self.off_sq -= r.offset * r.offset

    def members(self) -> list[Request]:
        """Every member, in admission order."""
        return sorted((e[-1] for e in self.newest.live()), key=BY_ADMISSION)

    def dissolve(self, s: int) -> list[Request]:
        """Materialise every member as of step ``s``; returns them in admission order."""
        members = self.members()
        for r in members:
            self.materialize(r, s)
        self.finishes.clear()
        self.newest.clear()
        self.longest.clear()
        return members

    def finish_through(self, last: int) -> list[Request]:
        """Members whose last step is ``last`` or earlier, materialised after step ``last``."""
        h = self.finishes.entries
        if not h or h[0][0] > last:  # the smallest key, stale or not, bounds the live ones
            return []
        out = []
        for e in self.finishes.pop_through(last):
            r = e[-1]
            self.materialize(r, last + 1)
            out.append(r)
        return out

    # ------------------------------------------------------------------ next events
    def newest_seq(self) -> int:
        """Admission number of the most recently admitted member (-1: none)."""
        e = self.newest.peek()
        return -e[0] if e is not None else -1

    def next_finish_step(self) -> float:
        """The earliest last step of a member."""
        e = self.finishes.peek()
        return e[0] if e is not None else INF

    def ctx_sq_sum(self, s: int) -> int:
        """The members' squared contexts summed at step ``s``: sum of (offset + s + 1)^2."""
        a = s + 1
        return self.off_sq + a * (2 * self.off_sum + self.n * a)

    def ctx_max(self, s: int) -> int:
        """The longest member context at step ``s`` (needs ``track_ctx_max``; 0: no member)."""
        e = self.longest.peek()
        return -e[0] + s + 1 if e is not None else 0

    # ------------------------------------------------------------------ KV blocks
    def reserve_blocks(self, s: int, kv: BlockCounter) -> bool:
        """The KV blocks members need at step ``s``: counting pool, those whose token opens a block;
        prefix-caching pool, the due allocations (and full blocks registered).  False, with nothing
        allocated, when the pool cannot hold them: the caller dissolves the cohort."""
        bs = self.block_size
        if self.counting:
            return kv.take(self.bucket[-s % bs])
        opening = self.opens[-s % bs]
        if opening:
            due = [r for r, first in opening.items() if first <= s]
            if len(due) > kv.num_free:
                return False
            if len(due) > 1:
                due.sort(key=BY_ADMISSION)
            kv.open_blocks(due)
        filled = self.fills[(-s - 1) % bs]
        if filled:  # their tokens once this step runs: offset + s + 1
            for r in kv.register_filled(sorted(filled, key=BY_ADMISSION) if len(filled) > 1 else list(filled), s + 1):
                del filled[r]  # past its token ids: no block of it is registered again while it stays
        return True

    def blocks_for_steps(self, s: int, j: int) -> int:
        """Blocks needed for steps s+1 .. s+j (a full cycle of block-size steps needs n)."""
        bs = self.block_size
        total = (j // bs) * self.n
        if self.counting:
            bucket = self.bucket
            for i in range(j - j % bs + 1, j + 1):
                total += bucket[-(s + i) % bs]
        else:  # a member joined at s holding its next block still opens one block per cycle after s
            opens = self.opens
            for i in range(j - j % bs + 1, j + 1):
                total += len(opens[-(s + i) % bs])
        return total
