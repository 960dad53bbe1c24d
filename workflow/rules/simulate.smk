# One run = one job = one folder results/<campaign>/runs/model=.../tp=.../link_bw=.../ holding
#   cluster.json            the cluster config derived from the base config for this run
#   run.json                the run's parameters, paths and SHA-256 of all its inputs, git_dirty
#   requests.parquet        tpsim's per-request rows (no rows when the run is infeasible)
#   requests.csv            the same as tpsim's 12-column CSV, only with `requests_csv: true`
#   requests.summary.json   tpsim's run summary: status ok|infeasible (+ reason, memory needs),
#                           metrics, memory per GPU, provenance (tpsim version, git commit, hashes)
#   tpsim.log               where it ran (host, Slurm job) and tpsim's output
# A model that does not fit (or a tp_size not dividing its heads) is recorded as infeasible by
# tpsim --record-infeasible and does not stop the campaign; any other error fails the job and
# prints the end of its log.  Deriving the config and simulating share one job: both take a
# fraction of a second, and Snakemake's cost per job is of the same order.


rule simulate:
    input:
        unpack(run_inputs),
    output:
        **simulate_output(),
    log:
        f"{RES}/runs/{{run}}/tpsim.log",
    conda:
        "../envs/tpsim.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        python=PYTHON,
        run=run_params,
        input_sha256=input_sha256,
        derive_args=derive_args,
        flags=simulate_flags,
        csv=f"{RES}/runs/{{run}}/{outputs.RUN_CSV}",
        tpsim_version=TPSIM_VERSION,
    # Every path is quoted (:q); derive_args and flags are joined with shlex.join.  --output names
    # the CSV; with --requests-format parquet tpsim writes requests.parquet beside it instead.
    shell:
        "echo host=$(uname -n) slurm_job=${{SLURM_JOB_ID:-none}} > {log:q};"
        " {params.python:q} -m tpsim.campaign.derive {params.derive_args}"
        " --cluster-out={output.cluster:q} --run-out={output.run:q} >> {log:q} 2>&1"
        " && {params.python:q} -m tpsim run --cluster-config={output.cluster:q}"
        " --dataset={input.trace:q} --output={params.csv:q} --record-infeasible"
        " --log-interval 0 {params.flags} >> {log:q} 2>&1"
        " || {{ echo run failed, end of {log:q}: >&2; tail -n 20 {log:q} >&2; exit 1; }}"
