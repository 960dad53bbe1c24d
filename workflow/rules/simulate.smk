# The matrix's runs, many per job: one `simulate` job per batch (tpsim/campaign/batches.py), which
# derives and simulates, in one process, each of its runs that is not done (tpsim/campaign/batch_job.py).
# Each run keeps its own folder results/<campaign>/runs/model=.../tp=.../link_bw=.../ holding
#   cluster.json            the cluster config derived from the base config for this run
#   run.json                the run's parameters, paths and SHA-256 of all its inputs, git_dirty
#   requests.parquet        tpsim's per-request rows (no rows when the run is infeasible)
#   requests.csv            the same as tpsim's 12-column CSV, only with `requests_csv: true`
#   requests.summary.json   tpsim's run summary: status ok|infeasible (+ reason, memory needs),
#                           metrics, memory per GPU, provenance (tpsim version, git commit, hashes)
#   tpsim.log               where it ran (host, Slurm job) and tpsim's output
#   done.json               written last: the run's key (what its outputs depend on), the trace's
#                           SHA-256, status, batch; a run without it (or with another key) reruns
# and the batch its record results/<campaign>/batches/<i>-of-<n>.json (each run's key and outcome)
# and log.  A model that does not fit is recorded as infeasible and does not stop the campaign; any
# other error fails the run, the batch's other runs still run, and then the job fails printing the
# end of each failed run's log.  Snakemake deletes the batch record of a failed job; the finished
# runs keep their folders and are not simulated again.


rule simulate:
    input:
        unpack(batch_inputs),
    output:
        f"{RES}/batches/{{batch}}.json",
    log:
        f"{RES}/batches/{{batch}}.log",
    conda:
        "../envs/tpsim.yaml"
    # runs in parallel worker processes; locally all cores (one batch job at a time then), on Slurm
    # one (set-threads in the profile), so that a batch is minutes long
    threads: workflow.cores
    resources:
        mem_mb=lambda wildcards, threads: 1000 * threads,
        runtime=batch_runtime,
    params:
        # the runs' specs, keys included: Snakemake's params trigger reruns the batch when one changes
        runs=batch_of,
    script:
        "../scripts/simulate_batch.py"
