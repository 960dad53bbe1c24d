"""One configuration's capacity search (one Snakemake job of a ``capacity:`` campaign).

    python -m tpsim.campaign.capacity_job --cluster RUN/cluster.json --run RUN/run.json \
        --generate '{...}' --slo '{...}' --capacity '{...}' --perf-model auto [--tpsim-args '[...]'] \
        --probes RUN/probes.jsonl --out RUN/capacity.json

Each probe generates the workload at one rate (in memory; :mod:`tpsim.tracegen`), simulates it
in-process (:func:`tpsim.run`, rows kept in memory) and appends one line to ``--probes``: the rate,
SLO attainment, goodput, throughput, latency percentiles and overload class, keyed by a hash of
everything the probe depends on.  A job that is stopped (killed, a node lost) and started again
re-reads the lines whose key still matches and probes only what is missing: the search
(:mod:`~tpsim.campaign.capacity`) is a pure function of the outcomes, so it ends where an
uninterrupted one would.  ``--out`` (written atomically, last) holds the result and every probe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from tpsim.campaign import capacity, slo
from tpsim.campaign.outputs import JSON_INDENT
from tpsim.campaign.provenance import file_sha256
from tpsim.io.writing import atomic_write_json

#: what each probe record keeps from the run summary's metrics (ms)
PROBE_METRICS = (("ttft", "p50"), ("ttft", "p90"), ("tpot", "p50"), ("tpot", "p90"), ("latency", "p50"),
                 ("latency", "p90"))


def probe_key(run_json: str, cluster: str, generate: dict, slo_doc: dict, flags: list[str]) -> str:
    """A hash of everything a probe's outcome depends on besides its rate."""
    import tpsim

    run = json.loads(Path(run_json).read_text(encoding="utf-8"))
    run.pop("git_dirty", None)  # where the job ran, not what it computes
    inputs = {name: rec.get("sha256") for name, rec in (run.pop("inputs", None) or {}).items()}  # content, not paths
    doc = {"run": run, "inputs": inputs, "cluster": file_sha256(cluster), "generate": generate, "slo": slo_doc,
           "flags": flags, "tpsim": tpsim.__version__}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def read_probes(path: str, key: str) -> list[dict]:
    """The probes an earlier job recorded for the same inputs (others, and a torn last line, are dropped)."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("key") == key:
            out.append(rec)
    return out


class Prober:
    """Runs probes of one configuration and records each one."""

    def __init__(self, args, generate: dict, slo_spec: slo.SLO, gpus: int, key: str, log):
        self.args, self.generate, self.slo, self.gpus, self.key, self.log = args, generate, slo_spec, gpus, key, log
        self.records: list[dict] = []
        self.infeasible: dict | None = None

    def config(self, trace_path: str):
        from tpsim.argspec import Parser
        from tpsim.commands.run import add_run_arguments, config_from_args

        parser = Parser(prog="tpsim run")
        add_run_arguments(parser)
        argv = ["--cluster-config", self.args.cluster, "--dataset", trace_path, "--log-interval", "0",
                "--perf-model", self.args.perf_model, "--seed", str(self.args.seed), "--record-infeasible",
                *json.loads(self.args.tpsim_args)]
        return config_from_args(parser.parse_args(argv))

    def __call__(self, rate: float) -> bool:
        import tpsim
        from tpsim.io.results import ListSink
        from tpsim.tracegen import TraceSpec, generate, write_jsonl

        t0 = time.perf_counter()
        trace = Path(self.args.probes).with_name(".probe-trace.jsonl")
        write_jsonl(generate(TraceSpec(**self.generate, rate=rate, seed=self.args.seed)), trace)
        sink = ListSink()
        try:
            result = tpsim.run(self.config(str(trace)), sink=sink)
        finally:
            trace.unlink(missing_ok=True)
        line = json.dumps(self.record(rate, result.summary, sink.rows, time.perf_counter() - t0), sort_keys=True)
        with open(self.args.probes, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        rec = json.loads(line)  # what a resumed job reads back: the same result either way
        self.add(rec)
        return bool(rec["slo_met"])

    def record(self, rate: float, summary, rows, wall_s: float) -> dict:
        rec = {"key": self.key, "rate": rate, "status": summary.status, "reason": summary.reason,
               "requests": (summary.totals or {}).get("requests"), "finished": len(rows),
               "simulated_time_s": summary.simulated_time_s, "wall_s": round(wall_s, 3)}
        if summary.status != "ok":
            rec.update(slo_met=False, memory_needed=summary.extra.get("memory_needed"))
            return rec
        thr = summary.throughput or {}
        rec.update(throughput_rps=thr.get("requests_per_s"), output_tokens_per_s=thr.get("output_tokens_per_s"))
        for metric, stat in PROBE_METRICS:
            rec[f"{metric}_{stat}_ms"] = summary.metric(metric, stat)
        req = {"arrival_ns": [r.arrival for r in rows], "ttft_ns": [r.ttft for r in rows],
               "tpot_ns": [r.tpot for r in rows], "latency_ns": [r.latency for r in rows],
               "output_tokens": [r.output for r in rows]}
        rec.update(slo.run_stats(req, self.slo, rec["requests"], summary.simulated_time_s,
                                 rec["output_tokens_per_s"], self.gpus))
        return rec

    def add(self, rec: dict) -> None:
        self.records.append(rec)
        if rec["status"] == "infeasible":
            self.infeasible = rec
        verdict = rec["status"] if rec["status"] != "ok" else (
            f"attainment {rec['slo_attainment'] * 100:.1f} % ({'pass' if rec['slo_met'] else 'fail'}), {rec['load']}")
        print(f"probe {len(self.records)}: {rec['rate']:.6g} req/s: {verdict} ({rec['wall_s']:.2f} s)",
              file=self.log, flush=True)


def run_search(args, log=sys.stdout) -> dict:
    params = json.loads(Path(args.run).read_text(encoding="utf-8"))
    generate, slo_doc, cap_doc = json.loads(args.generate), json.loads(args.slo), json.loads(args.capacity)
    settings = capacity.Settings.from_doc(cap_doc, generate.pop("rate", 1.0))
    generate.pop("seed", None)
    gpus = (params.get("num_npus") or 1) * (params.get("num_instances") or 1)
    key = probe_key(args.run, args.cluster, generate, slo_doc, json.loads(args.tpsim_args))
    prober = Prober(args, generate, slo.SLO.from_doc(slo_doc), gpus, key, log)
    recorded = read_probes(args.probes, key)
    with open(args.probes, "w", encoding="utf-8") as f:  # keep only what still matches
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in recorded)
    if recorded:
        print(f"resuming: {len(recorded)} probe(s) recorded for these inputs", file=log)
    by_rate = {r["rate"]: r for r in recorded}

    def replay_or_probe(rate):
        rec = next((r for x, r in by_rate.items() if capacity.same_rate(x, rate)), None)
        if rec is None:
            return False if prober.infeasible is not None else prober(rate)
        prober.add(rec)
        return bool(rec["slo_met"])

    state, status = capacity.search(settings, replay_or_probe)
    if prober.infeasible is not None:
        status = "infeasible"
    return result_doc(params, settings, slo_doc, state, status, prober)


def result_doc(params: dict, settings: capacity.Settings, slo_doc: dict, state, status: str, prober) -> dict:
    best = next((r for r in prober.records if state.passed is not None and capacity.same_rate(r["rate"], state.passed)),
                None)
    gap = None if state.passed is None or state.failed is None else (state.failed - state.passed) / state.passed
    doc = {k: v for k, v in params.items() if k not in ("inputs",)}
    doc.update(status=status, reason=(prober.infeasible or {}).get("reason"),
               memory_needed=(prober.infeasible or {}).get("memory_needed"),
               capacity_rps=state.passed if status != "infeasible" else None,
               first_failing_rps=state.failed, relative_bracket=gap, tolerance=settings.tolerance,
               slo=slo_doc, at_capacity={k: v for k, v in (best or {}).items() if k not in ("key", "wall_s")} or None,
               probes=[{k: v for k, v in r.items() if k not in ("key", "wall_s")} for r in prober.records])
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("--cluster", "--run", "--generate", "--slo", "--capacity", "--probes", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--perf-model", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tpsim-args", default="[]", help="extra tpsim run flags as a JSON list")
    args = ap.parse_args(argv)
    from tpsim.errors import InputError

    t0 = time.perf_counter()
    try:
        doc = run_search(args)
    except InputError as exc:
        print(f"tpsim: error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, doc, indent=JSON_INDENT)
    print(f"{doc['status']}: capacity {doc['capacity_rps']} req/s after {len(doc['probes'])} probes "
          f"({time.perf_counter() - t0:.1f} s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
