# Campaign tables with DuckDB, from the explicit list of run outputs (no globbing).


rule aggregate:
    input:
        runs=run_outputs("run.json"),
        csv=run_outputs("requests.csv"),
        summaries=run_outputs("requests.summary.json"),
    output:
        db=f"{RES}/campaign.duckdb",
        runs_parquet=f"{RES}/runs.parquet",
        runs_csv=report(
            f"{RES}/runs.csv",
            caption="../report/runs.rst",
            category="Tables",
            labels={"table": "runs"},
        ),
        requests_parquet=f"{RES}/requests.parquet",
        requests_csv=f"{RES}/requests.csv",
    log:
        f"{RES}/logs/aggregate.log",
    localrule: True
    conda:
        "../envs/tpsim.yaml"
    script:
        "../scripts/aggregate.py"


rule campaign_record:
    output:
        f"{RES}/campaign.json",
    log:
        f"{RES}/logs/campaign_record.log",
    localrule: True
    params:
        doc=campaign_record(),
    run:
        atomic_write_json(output[0], params.doc, indent=outputs.JSON_INDENT)
