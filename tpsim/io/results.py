"""The per-request results: LLMServingSim's 12-column CSV, its rows, writers and reader.

CSV columns (all times integer ns of simulated time):

=============== ==============================================================
instance id     instance that served the request (cluster-config order)
request id      0-based line index in the trace (a session reserves one per sub-request)
model           the instance's model name
input           prompt tokens (prefix-cache hits included)
output          generated tokens
arrival         arrival time (session follow-ups: release time)
end_time        completion of the step that sampled the last token
latency         end_time - arrival
queuing_delay   first time the request was scheduled - arrival
TTFT            completion of the step that sampled the first token - arrival
TPOT            (latency - TTFT) // (output - 1); 0 when output == 1
ITL             "[g1, g2, ...]": gaps between consecutive tokens, output - 1 of them;
                TTFT + sum(ITL) == latency
=============== ==============================================================

Rows are grouped by instance (instance 0 first) in completion order, as LLMServingSim writes
them.  :class:`~tpsim.sim.recorder.Recorder` makes them as requests finish; a *sink* receives them
(:class:`CsvFileSink` by default, :class:`ListSink` in tests and notebooks); :func:`read_rows`
reads a CSV back (tpsim's or LLMServingSim's) with errors naming the line.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import msgspec

from tpsim.errors import InputError

COLUMNS = ("instance id", "request id", "model", "input", "output", "arrival", "end_time", "latency",
           "queuing_delay", "TTFT", "TPOT", "ITL")
HEADER = ",".join(COLUMNS) + "\n"
#: the columns holding whole numbers (the others: ``model`` and ``ITL`` are text)
INT_COLUMNS = ("instance id", "request id", "input", "output", "arrival", "end_time", "latency", "queuing_delay",
                "TTFT", "TPOT")


class RequestRow(msgspec.Struct):
    """One finished request: the CSV's columns (``itl_text`` is the ITL column without its quotes)."""

    instance_id: int
    request_id: int
    model: str
    input: int
    output: int
    arrival: int
    end_time: int
    latency: int
    queuing_delay: int
    ttft: int
    tpot: int
    itl_text: str

    @property
    def itl(self) -> list[int]:
        """The inter-token gaps in ns."""
        inner = self.itl_text.strip()[1:-1].strip()
        return [int(g) for g in inner.split(",")] if inner else []

    def as_list(self) -> list:
        """The fields in order (``RequestRow(*row.as_list())`` is the row again)."""
        return [self.instance_id, self.request_id, self.model, self.input, self.output, self.arrival, self.end_time,
                self.latency, self.queuing_delay, self.ttft, self.tpot, self.itl_text]

    def csv_line(self) -> str:
        return (f"{self.instance_id},{self.request_id},{_csv_field(self.model)},{self.input},{self.output},"
                f"{self.arrival},{self.end_time},{self.latency},{self.queuing_delay},{self.ttft},{self.tpot},"
                f"\"{self.itl_text}\"\n")


def _csv_field(text: str) -> str:
    if "," in text or '"' in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


class RowSink(Protocol):
    """Where a run's rows go.  ``commit`` receives the summary's JSON text once every row is written
    (a file sink writes both together); ``abort`` undoes a partial write."""

    def write(self, row: RequestRow) -> None: ...

    def commit(self, summary_json: str | None) -> None: ...

    def abort(self) -> None: ...


class ListSink:
    """Rows kept in memory (tests, notebooks); the summary's text in ``summary_json``."""

    def __init__(self):
        self.rows: list[RequestRow] = []
        self.summary_json: str | None = None

    def write(self, row: RequestRow) -> None:
        self.rows.append(row)

    def commit(self, summary_json: str | None) -> None:
        self.summary_json = summary_json

    def abort(self) -> None:
        self.rows = []

    def csv_text(self) -> str:
        return HEADER + "".join(row.csv_line() for row in self.rows)


class CsvFileSink:
    """The CSV at ``path`` (and/or its Parquet form) and the summary beside it, all renamed into place at
    ``commit`` or none of them.

    ``parquet_path`` adds the rows as Parquet (zstd; ITL as a list of integers; column names as the campaign
    tables use them), converted from the CSV with DuckDB at the end of the run (imported only then; ``pip
    install duckdb``); ``keep_csv`` False writes the Parquet file only.
    """

    def __init__(self, path: str, summary_path: str, parquet_path: str | None = None, keep_csv: bool = True):
        from tpsim.io.writing import AtomicFiles

        self.path = path
        self.summary_path = summary_path
        self.parquet_path = parquet_path
        self.keep_csv = keep_csv or parquet_path is None
        self._files = AtomicFiles()
        self._scratch = None
        try:
            if self.keep_csv:
                self._csv = self._files.open(path)
            else:  # the CSV is only the Parquet file's source: a scratch file beside it
                self._scratch = AtomicFiles()
                self._csv = self._scratch.open(path)
            self._csv.write(HEADER)
        except OSError as exc:
            self.abort()
            raise _unwritable(path, exc) from None

    def write(self, row: RequestRow) -> None:
        self._csv.write(row.csv_line())

    def commit(self, summary_json: str | None) -> None:
        try:
            if self.parquet_path is not None:
                self._csv.flush()
                source = (self._scratch or self._files).temp_of(self.path)
                write_parquet(source, self._files.reserve(self.parquet_path, ".parquet"))
            if summary_json is not None:
                self._files.open(self.summary_path).write(summary_json)
            self._files.commit()
        except OSError as exc:
            self.abort()
            raise _unwritable(self.path, exc) from None
        finally:
            if self._scratch is not None:
                self._scratch.abort()

    def abort(self) -> None:
        self._files.abort()
        if self._scratch is not None:
            self._scratch.abort()


#: Parquet columns of the per-request rows (the campaign's ``requests`` table uses the same names)
PARQUET_COLUMNS = ("instance_id", "request_id", "model", "input_tokens", "output_tokens", "arrival_ns", "end_time_ns",
                   "latency_ns", "queuing_delay_ns", "ttft_ns", "tpot_ns", "itl_ns")


def write_parquet(csv_path: str, parquet_path: str) -> None:
    """The 12-column CSV as Parquet (DuckDB; ITL a list of BIGINT); DuckDB's errors (a full disk) as OSError."""
    con = _parquet_connection()  # first: without DuckDB, the error says how to install it
    import duckdb

    types = {name: ("VARCHAR" if name in ("model", "ITL") else "BIGINT") for name in COLUMNS}
    select = ", ".join(f'"{c}" AS {p}' for c, p in zip(COLUMNS[:-1], PARQUET_COLUMNS[:-1]))
    try:
        con.execute(
            f"COPY (SELECT {select}, from_json(\"ITL\", '[\"BIGINT\"]') AS itl_ns "
            "FROM read_csv($src, header = true, columns = $types, auto_detect = false, quote = '\"')) "
            "TO '" + parquet_path.replace("'", "''") + "' (FORMAT parquet, COMPRESSION zstd)",
            {"src": csv_path, "types": types})
    except duckdb.Error as exc:
        raise OSError(f"DuckDB could not write the Parquet file: {' '.join(str(exc).split())[:300]}") from None


@functools.cache
def _parquet_connection():
    """One in-memory DuckDB connection per process, made on the first Parquet file: a campaign's batch
    job writes hundreds, and a fresh connection costs 3x the conversion itself (12 ms against 36 ms
    for 300 requests)."""
    try:
        import duckdb
    except ImportError:
        raise InputError("--requests-format parquet needs DuckDB: pip install duckdb (or the 'workflow' extra), "
                         "or use --requests-format csv") from None
    return duckdb.connect()


def _unwritable(path: str, exc: OSError) -> InputError:
    return InputError(f"--output {path}: cannot write it ({exc.strerror or exc}); choose a writable file path")


# ---------------------------------------------------------------------------- reading


def _csv_lines(path: Path):
    """Yield (line number, fields) of a CSV whose last field (ITL) may be long."""
    import csv  # reading only: a run writes its rows itself

    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 1 << 30))
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for fields in reader:
                yield reader.line_num, fields
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file; expected the 12-column per-request CSV") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV ({exc})") from None
    finally:
        csv.field_size_limit(limit)


def read_rows(path) -> Iterator[tuple[str, RequestRow]]:
    """(``path:line``, row) for each request of a 12-column CSV; the header is checked first."""
    path = Path(path)
    header_seen = False
    for lineno, fields in _csv_lines(path):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        where = f"{path}:{lineno}"
        if not header_seen:
            names = tuple(c.strip() for c in fields)
            if names != COLUMNS:
                raise InputError(f"{where}: expected the 12-column header '{','.join(COLUMNS)}', "
                                 f"got '{','.join(names)}'")
            header_seen = True
            continue
        yield where, _row(fields, where)
    if not header_seen:
        raise InputError(f"{path}: empty file; expected the 12-column per-request CSV")


def _row(fields: list[str], where: str) -> RequestRow:
    if len(fields) != len(COLUMNS):
        raise InputError(f"{where}: expected {len(COLUMNS)} columns, got {len(fields)}")
    nums = []
    for name, text in zip(COLUMNS, fields):
        if name in INT_COLUMNS:
            try:
                nums.append(int(text.strip()))
            except ValueError:
                raise InputError(f"{where}: column '{name}' must be an integer, got {text!r}") from None
    instance_id, request_id, inp, out, arrival, end_time, latency, queuing_delay, ttft, tpot = nums
    return RequestRow(instance_id, request_id, fields[2], inp, out, arrival, end_time, latency, queuing_delay, ttft,
                      tpot, fields[11].strip())

