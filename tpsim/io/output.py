"""Outputs: LLMServingSim's 12-column per-request CSV and the run summary JSON.

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

Rows are grouped by instance (instance 0 first) in completion order, as
LLMServingSim writes them.  Files are written to a temporary name and renamed,
so a reader never sees a partial file.
"""

from __future__ import annotations

import json
import os

HEADER = "instance id,request id,model,input,output,arrival,end_time,latency,queuing_delay,TTFT,TPOT,ITL\n"


def atomic_write_text(path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see a partial file."""
    atomic_write_files([(path, text)])


def atomic_write_files(files: list[tuple[str, str | bytes]]) -> None:
    """Write several files (text, or bytes as given) as one step: every temporary file first,
    then the renames.

    A failure while writing leaves none of them (and no temporary files) behind, so a
    CSV never appears without its summary.
    """
    tmps: list[tuple[str, str]] = []
    try:
        for path, text in files:
            path = os.fspath(path)
            folder = os.path.dirname(path) or "."
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
            tmps.append((tmp, path))
            if isinstance(text, bytes):
                with open(tmp, "wb") as f:
                    f.write(text)
            else:
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
        for tmp, path in tmps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in tmps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


def json_text(obj) -> str:
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json_text(obj))


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def render_csv(instances, itl_counts: dict | None = None) -> str:
    """The per-request CSV; fills ``itl_counts`` (gap ns -> occurrences) on the way."""
    out = [HEADER]
    counts = itl_counts if itl_counts is not None else {}
    for inst in instances:
        ends = inst.iter_ends
        if not inst.finished:
            continue
        gap_str = ["0"] + [str(ends[i] - ends[i - 1]) for i in range(1, len(ends))]
        diff = [0] * (len(ends) + 1)
        model = _csv_field(inst.model_name)
        prefix = f"{inst.index},"
        for r in inst.finished:
            em = r.emissions
            parts = []
            prev = -1
            for j in range(0, len(em), 2):
                s, c = em[j], em[j + 1]
                if prev >= 0:
                    g = ends[s] - prev
                    parts.append(str(g))
                    counts[g] = counts.get(g, 0) + 1
                if c > 1:
                    parts.append(", ".join(gap_str[s + 1:s + c]))
                    diff[s + 1] += 1
                    diff[s + c] -= 1
                prev = ends[s + c - 1]
            latency = r.finish - r.arrival
            ttft = r.first_token - r.arrival
            tpot = (latency - ttft) // (r.output - 1) if r.output > 1 else 0
            out.append(
                f"{prefix}{r.rid},{model},{r.prompt},{r.output},{r.arrival},{r.finish},{latency},"
                f"{r.first_scheduled - r.arrival},{ttft},{tpot},\"[{', '.join(parts)}]\"\n"
            )
        w = 0
        for i in range(1, len(ends)):
            w += diff[i]
            if w:
                g = ends[i] - ends[i - 1]
                counts[g] = counts.get(g, 0) + w
    return "".join(out)
