# Fidelity against measured vLLM replays:  snakemake --cores all validate
#
# For every measured case directory under config["validation_root"] (default ../shared/validation;
# a case has config.json, trace.jsonl and vllm/requests.jsonl):
#   tpsim replay --perf-model kernels                   -> results/validation/<case>/tpsim-kernels.csv
#       when every GPU of the case has kernel tables (configs/kernels/<GPU>/)
#   tpsim replay --perf-model analytical                -> results/validation/<case>/tpsim-analytical.csv
#   tpsim replay --perf-model profile --profile-dir P   -> results/validation/<case>/tpsim-profile.csv
#       only when this build has the profile model (tpsim/perf/profile.py) and
#       P = config["validation_profiles"] (default ../shared/profiles/llmservingsim) holds a
#       bundle for the case's hardware / model / dtype / tp; otherwise that row is left out
#   tpsim validate on each, and on the peer's <case>/llmservingsim/sim.csv when present
#       -> results/validation/<case>/<simulator>/validation.{json,md}, cdf.*, throughput.*
#   the accuracy table -> results/validation/accuracy.{csv,md}
# A replay reruns when its case's files change and when tpsim's code or catalogs do (params.code).
# See docs/validation.md.


include: "validation_common.smk"


rule validation_replay:
    input:
        unpack(validation_case_inputs),
    output:
        csv=f"{VAL_OUT}/{{case}}/tpsim-{{perf}}.csv",
        summary=f"{VAL_OUT}/{{case}}/tpsim-{{perf}}.summary.json",
    log:
        f"logs/validation/{{case}}/tpsim-{{perf}}.log",
    wildcard_constraints:
        perf="kernels|analytical|profile",
    conda:
        "../envs/tpsim.yaml"
    params:
        python=VAL_PYTHON,
        measured=validation_measured_dir,
        flags=validation_replay_flags,
        code=validation_replay_code,
    shell:
        "{params.python:q} -m tpsim replay --measured {params.measured:q} --output {output.csv:q}"
        " {params.flags} > {log:q} 2>&1"


rule validation_compare:
    input:
        unpack(validation_sim_inputs),
    output:
        json=f"{VAL_OUT}/{{case}}/{{simulator}}/validation.json",
        md=f"{VAL_OUT}/{{case}}/{{simulator}}/validation.md",
        figures=multiext(f"{VAL_OUT}/{{case}}/{{simulator}}/cdf", ".pdf", ".png"),
    log:
        f"logs/validation/{{case}}/{{simulator}}.validate.log",
    wildcard_constraints:
        simulator="tpsim-kernels|tpsim-analytical|tpsim-profile|LLMServingSim",
    conda:
        "../envs/tpsim.yaml"
    params:
        python=VAL_PYTHON,
        measured=validation_measured_dir,
        out=validation_out_dir,
    shell:
        "{params.python:q} -m tpsim validate --measured {params.measured:q} --sim {input.csv:q}"
        " --label {wildcards.simulator:q} --out {params.out:q} > {log:q} 2>&1"


rule validation_table:
    input:
        validation_reports(),
    output:
        csv=f"{VAL_OUT}/accuracy.csv",
        md=f"{VAL_OUT}/accuracy.md",
    log:
        "logs/validation/accuracy.log",
    localrule: True
    conda:
        "../envs/tpsim.yaml"
    params:
        python=VAL_PYTHON,
    shell:
        "{params.python:q} -m tpsim.validation.accuracy --csv {output.csv:q} --md {output.md:q} {input:q}"
        " > {log:q} 2>&1"


rule validate:
    input:
        rules.validation_table.output,
