# A generated workload: one seeded `tpsim trace` per (rate, seed) of the matrix, shared by all
# runs with that rate and seed.  (A campaign with `workload: {trace: PATH}` reads PATH instead.)


rule trace:
    output:
        f"{RES}/workloads/rate={{rate}}/seed={{seed}}/trace.jsonl",
    log:
        f"{RES}/workloads/rate={{rate}}/seed={{seed}}/trace.log",
    localrule: True
    conda:
        "../envs/tpsim.yaml"
    params:
        python=PYTHON,
        flags=trace_flags,
    # Every path is quoted (:q); flags are joined with shlex.join; rate and seed match
    # wildcard_constraints (digits, '.', 'e', '+', '-').
    shell:
        "{params.python:q} -m tpsim trace {params.flags} --rate={wildcards.rate:q}"
        " --seed={wildcards.seed:q} --output={output:q} > {log:q} 2>&1"
