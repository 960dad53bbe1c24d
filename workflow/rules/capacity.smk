# Capacity search (a campaign with `capacity:`): one job per configuration of the matrix, in
# results/<campaign>/runs/<config id>/:
#   cluster.json, run.json  as for a run (rate: null: the search chooses it)
#   probes.jsonl            every probe as it finishes (rate, SLO attainment, goodput, latency,
#                           overload); not an output, so it survives a stopped job: the next job
#                           re-reads the probes whose inputs still match and probes only the rest
#   capacity.json           the result: capacity (highest passing rate), the first failing rate,
#                           status, the probe at the capacity, every probe
#   search.log              where it ran and one line per probe
# The logic is tpsim.campaign.capacity (the search) and tpsim.campaign.capacity_job (the probes).


rule capacity_search:
    input:
        unpack(run_inputs),
    output:
        cluster=f"{RES}/runs/{{run}}/cluster.json",
        run=f"{RES}/runs/{{run}}/run.json",
        result=f"{RES}/runs/{{run}}/capacity.json",
    log:
        f"{RES}/runs/{{run}}/search.log",
    conda:
        "../envs/tpsim.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        python=PYTHON,
        run=run_params,
        input_sha256=input_sha256,
        derive_args=derive_args,
        search_args=capacity_args,
        probes=f"{RES}/runs/{{run}}/probes.jsonl",
        tpsim_version=TPSIM_VERSION,
    shell:
        "echo host=$(uname -n) slurm_job=${{SLURM_JOB_ID:-none}} > {log:q};"
        " {params.python:q} -m tpsim.campaign.derive {params.derive_args}"
        " --cluster-out={output.cluster:q} --run-out={output.run:q} >> {log:q} 2>&1"
        " && {params.python:q} -m tpsim.campaign.capacity_job --cluster={output.cluster:q}"
        " --run={output.run:q} --probes={params.probes:q} --out={output.result:q}"
        " {params.search_args} >> {log:q} 2>&1"
        " || {{ echo search failed, end of {log:q}: >&2; tail -n 20 {log:q} >&2; exit 1; }}"
