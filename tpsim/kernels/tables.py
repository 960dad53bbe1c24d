"""Query a GPU's kernel tables: one call per kernel, one :class:`KernelEstimate` back.

``load_kernel_tables("H100")`` finds ``kernels/H100/`` through the config search order
(``$TPSIM_CONFIG_DIR``, ``./configs``, the checkout's ``configs/``) and reads only its
``provenance.json``; each table file is parsed the first time a query needs it and kept.
Every estimate says whether it is a measurement, an interpolation between measurements or
an extrapolation (see :mod:`tpsim.kernels.grid` for the rules), and which grid points it used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from tpsim.config.catalog import find
from tpsim.errors import InputError
from tpsim.kernels import store
from tpsim.kernels.grid import EXTRAPOLATED, Grid, GridLine
from tpsim.kernels.kinds import KINDS
from tpsim.kernels.roofline import ELEMENT_BYTES, Spec

#: custom all-reduce backends: vLLM under CUDA graphs, and eager
BACKENDS = ("graph", "eager")
NCCL_OPS = ("all_reduce", "all_gather", "reduce_scatter", "alltoall")
_MEMO_LIMIT = 200_000


class MissingTableError(LookupError):
    """The GPU has no table for this kernel and dtype (never imported, or skipped by the importer)."""


class KernelEstimate(msgspec.Struct, frozen=True):
    """A kernel's time from the tables, and where it came from."""

    time_ns: float
    source: str                     # "measured" | "interpolated" | "extrapolated"
    table: str                      # e.g. "gemm.bfloat16"
    key: tuple                      # the measured key used, e.g. (32, 8, 128) heads; () for GEMM
    axes: tuple[str, ...]           # names of the grid axes, e.g. ("m", "n", "k")
    points: tuple[tuple, ...]       # the grid nodes the time was read from (coordinates on ``axes``)
    note: str = ""                  # how an extrapolation was made


class _Groups(Mapping):
    """A table's grids by key, each built when first asked for (a run reads one head configuration of an
    attention table that holds dozens)."""

    def __init__(self, table: _Table, docs: dict[tuple, dict]):
        self._table = table
        self._docs = docs
        self._grids: dict[tuple, Grid] = {}

    def __getitem__(self, key) -> Grid:
        grid = self._grids.get(key)
        if grid is None:
            g = self._docs[key]
            t = self._table
            grid = self._grids[key] = Grid(t.kind.axis_names, g["axes"], g["latency_ns"], t._roofline(t.spec, key))
        return grid

    def get(self, key, default=None):
        grid = self._grids.get(key)
        if grid is not None:
            return grid
        return self[key] if key in self._docs else default

    def __iter__(self):
        return iter(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, key) -> bool:
        return key in self._docs


class _Table:
    """One parsed table file: a :class:`Grid` per key."""

    def __init__(self, doc: dict, spec: Spec):
        self.name = doc["table"]
        self.kind = KINDS[doc["kind"]]
        self.header = doc
        self.spec = spec
        self.groups = _Groups(self, {tuple(g["key"]): g for g in doc["groups"]})

    def _roofline(self, spec, key):
        kind, header = self.kind, self.header
        return lambda point: kind.roofline(spec, header, key, point).bound_ns

    def estimate(self, key: tuple, point: tuple) -> KernelEstimate:
        grid = self.groups.get(key)
        if grid is not None:
            t, source, nodes, note = grid.lookup(point)
            return KernelEstimate(t, source, self.name, key, self.kind.axis_names, nodes, note)
        near = self._nearest_key(key)
        grid = self.groups[near]
        t, _, nodes, note = grid.lookup(point)
        query_cost = grid.floor_ns + self._roofline(self.spec, key)(point)
        t *= query_cost / grid.cost(point)
        names = ", ".join(self.kind.key_names)
        why = f"({names}) = {key} not measured: roofline-scaled from {near}"
        return KernelEstimate(t, EXTRAPOLATED, self.name, near, self.kind.axis_names, nodes,
                              why + (f"; {note}" if note else ""))

    def _nearest_key(self, key: tuple) -> tuple:
        best = None
        for cand in self.groups:
            d = self.kind.distance(key, cand)
            if d is not None and (best is None or (d, cand) < best):
                best = (d, cand)
        if best is None:
            raise MissingTableError(f"{self.name}: no measured {self.kind.key_names} can stand in for {key}; "
                                    f"measured: {sorted(self.groups)}")
        return best[1]


class KernelTables:
    """The kernel tables of one GPU; each table is read on first use."""

    def __init__(self, hardware: str, folder: Path, provenance: dict):
        self.hardware = hardware
        self.folder = Path(folder)
        self.provenance = provenance
        self.spec = Spec.from_json(provenance["spec"])
        self._files = {name: rec["file"] for name, rec in provenance["tables"].items()}
        self._tables: dict[str, _Table] = {}
        self._memo: dict[tuple, KernelEstimate] = {}
        self._lines: dict[tuple, GridLine | bool] = {}  # collective_ns: a grid line, or False (no measured grid)
        #: collective tables by element size: {"nccl": {2: "nccl.float16", 1: "nccl.int8"}, ...}
        self._by_size: dict[str, dict[int, str]] = {}
        for name in sorted(self._files):
            kind, dtype = name.split(".")[:2]
            if kind in ("nccl", "custom_allreduce"):
                self._by_size.setdefault(kind, {})[ELEMENT_BYTES[dtype]] = name

    def available(self) -> tuple[str, ...]:
        """Names of the tables this GPU has (``gemm.bfloat16``, ``nccl.int8``, ...)."""
        return tuple(sorted(self._files))

    def loaded(self) -> tuple[str, ...]:
        """Names of the tables parsed so far."""
        return tuple(sorted(self._tables))

    def has(self, name: str) -> bool:
        return name in self._files

    def table(self, name: str) -> _Table:
        t = self._tables.get(name)
        if t is None:
            file = self._files.get(name)
            if file is None:
                raise MissingTableError(f"{self.hardware} has no kernel table {name!r}; it has "
                                        f"{', '.join(self.available())} ({self.folder})")
            doc = store.read_table(self.folder / file)
            if doc.get("table") != name or doc.get("kind") not in KINDS:
                raise InputError(f"{self.folder / file}: holds table {doc.get('table')!r}, provenance.json says "
                                 f"{name!r}; re-run `tpsim import aic`")
            t = self._tables[name] = _Table(doc, self.spec)
        return t

    def _query(self, name: str, key: tuple, point: tuple) -> KernelEstimate:
        memo_key = (name, key, point)
        hit = self._memo.get(memo_key)
        if hit is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            hit = self._memo[memo_key] = self.table(name).estimate(key, point)
        return hit

    def line(self, name: str, key: tuple, point: tuple, axis: int) -> GridLine | None:
        """The measured grid of ``key`` in table ``name`` along ``axis`` through ``point``: its
        ``estimate(x)`` is exactly the time and source the query with ``x`` there gets (None where the key
        was not measured: the queries are scaled from another key)."""
        grid = self.table(name).groups.get(key)
        return grid.line(point, axis) if grid is not None else None

    # -- kernels -------------------------------------------------------------------------

    def gemm(self, m: int, n: int, k: int, dtype: str = "bfloat16") -> KernelEstimate:
        """``y[m, n] = x[m, k] @ W[n, k]^T`` as vLLM's linear layer runs it (m = tokens)."""
        _positive(m=m, n=n, k=k)
        return self._query(store.table_name("gemm", dtype), (), (m, n, k))

    def context_attention(self, batch: int, isl: int, num_heads: int, num_kv_heads: int, head_dim: int,
                          dtype: str = "bfloat16", kv_dtype: str = "bfloat16") -> KernelEstimate:
        """Prefill attention of ``batch`` sequences of ``isl`` new tokens each, with no cached
        context (the table's only case); heads are per GPU."""
        _positive(batch=batch, isl=isl, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim)
        name = store.table_name("context_attention", dtype, kv_dtype)
        return self._query(name, (num_heads, num_kv_heads, head_dim), (batch, isl))

    def generation_attention(self, batch: int, context_len: int, num_heads: int, num_kv_heads: int,
                             head_dim: int, dtype: str = "bfloat16", kv_dtype: str = "bfloat16") -> KernelEstimate:
        """Decode attention of ``batch`` sequences, one new token each, attending ``context_len``
        tokens (the new one included: vLLM's ``seq_len``); heads are per GPU."""
        _positive(batch=batch, context_len=context_len, num_heads=num_heads, num_kv_heads=num_kv_heads,
                  head_dim=head_dim)
        name = store.table_name("generation_attention", dtype, kv_dtype)
        return self._query(name, (num_heads, num_kv_heads, head_dim), (batch, context_len))

    def custom_allreduce(self, num_gpus: int, elements: int, dtype: str = "bfloat16",
                         backend: str = "graph") -> KernelEstimate:
        """vLLM's custom all-reduce of ``elements`` values on each of ``num_gpus`` GPUs, under
        CUDA graphs (``graph``) or eager (``eager``)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        return self._collective("custom_allreduce", backend, num_gpus, elements, dtype)

    def nccl(self, op: str, num_gpus: int, elements: int, dtype: str = "bfloat16") -> KernelEstimate:
        """An NCCL collective; ``elements`` counts the whole message as nccl-tests does: the
        all-reduced buffer, the gathered output, the reduce-scattered input, one rank's
        all-to-all buffer.  NCCL's cost depends on bytes, so every 2-byte dtype reads the
        2-byte table and every 1-byte dtype the int8 one."""
        if op not in NCCL_OPS:
            raise ValueError(f"op must be one of {NCCL_OPS}, not {op!r}")
        return self._collective("nccl", op, num_gpus, elements, dtype)

    def collective_ns(self, kind: str, first: str, num_gpus: int, elements: int, dtype: str) -> tuple[float, str]:
        """``(time_ns, source)`` of :meth:`custom_allreduce` (``first`` its backend) or :meth:`nccl` (``first`` the
        op): the same numbers, read along the measured grid's line where there is one (the hot path of a
        latency model asks one collective at many message sizes), else through the full estimate."""
        line_key = (kind, first, num_gpus, dtype)
        line = self._lines.get(line_key)
        if line is None:
            name = self._by_size.get(kind, {}).get(ELEMENT_BYTES.get(dtype, 0))
            grid = self.table(name).groups.get((first, num_gpus)) if name is not None and num_gpus >= 2 else None
            line = self._lines[line_key] = grid.line((1,), 0) if grid is not None else False
        if line is False or not elements > 0:
            est = self._collective(kind, first, num_gpus, elements, dtype)
            return est.time_ns, est.source
        return line.estimate(elements)

    def _collective(self, kind: str, first: str, num_gpus: int, elements: int, dtype: str) -> KernelEstimate:
        _positive(elements=elements)
        if num_gpus < 2:
            raise ValueError(f"a collective needs num_gpus >= 2, not {num_gpus}")
        size = ELEMENT_BYTES.get(dtype)
        if size is None:
            raise ValueError(f"dtype must be one of {sorted(ELEMENT_BYTES)}, not {dtype!r}")
        by_size = self._by_size.get(kind, {})
        if size in by_size:
            return self._query(by_size[size], (first, num_gpus), (elements,))
        if not by_size:
            raise MissingTableError(f"{self.hardware} has no {kind} table ({self.folder})")
        # Another element size: the same bytes in the nearest measured element size.
        near = min(by_size, key=lambda s: (abs(s - size), s))
        est = self._query(by_size[near], (first, num_gpus), (elements * size / near,))
        note = f"{dtype} read as {elements * size / near:g} {by_size[near].split('.')[1]} elements (same bytes)"
        return KernelEstimate(est.time_ns, EXTRAPOLATED, est.table, est.key, est.axes, est.points,
                              note + (f"; {est.note}" if est.note else ""))

    def moe(self, num_tokens: int, hidden_size: int, inter_size: int, topk: int, num_experts: int,
            tp_size: int = 1, ep_size: int = 1, dtype: str = "bfloat16",
            distribution: str = "balanced") -> KernelEstimate:
        """vLLM's fused MoE layer on one GPU: ``num_tokens`` tokens routed to ``topk`` of
        ``num_experts`` experts of the full ``inter_size``, sharded ``tp_size`` x ``ep_size``;
        ``distribution`` is the source's token routing (balanced, power_law_1.01, power_law_1.2)."""
        _positive(num_tokens=num_tokens, hidden_size=hidden_size, inter_size=inter_size, topk=topk,
                  num_experts=num_experts, tp_size=tp_size, ep_size=ep_size)
        key = (hidden_size, inter_size, topk, num_experts, tp_size, ep_size, distribution)
        return self._query(store.table_name("moe", dtype), key, (num_tokens,))


def _positive(**values) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, not {v!r}")


_LOADED: dict[tuple[str, Path], KernelTables] = {}


def load_kernel_tables(hardware_name: str) -> KernelTables | None:
    """The kernel tables of a catalog GPU (``H100``), or None where none are installed."""
    path = find("kernels", f"{hardware_name}/{store.PROVENANCE_FILE}")
    if path is None:
        return None
    folder = path.parent.resolve()
    cached = _LOADED.get((hardware_name, folder))
    if cached is None:
        cached = _LOADED[(hardware_name, folder)] = KernelTables(hardware_name, folder, store.read_provenance(path))
    return cached
