# Campaign tables with DuckDB, from the explicit list of run outputs (no globbing).


if CAPACITY:

    rule aggregate:
        input:
            results=run_outputs("capacity.json"),
        output:
            **table_outputs(),
        log:
            f"{RES}/logs/aggregate.log",
        localrule: True
        conda:
            "../envs/tpsim.yaml"
        params:
            tables=list(TABLE_FILES),
        script:
            "../scripts/capacity_tables.py"

else:

    rule aggregate:
        # the batch records stand for the run folders they finished (listed in params: the batch
        # jobs write them, Snakemake sees only the records)
        input:
            batches=batch_records(),
        output:
            **table_outputs(),
        log:
            f"{RES}/logs/aggregate.log",
        localrule: True
        conda:
            "../envs/tpsim.yaml"
        params:
            runs=run_outputs("run.json"),
            requests=run_outputs(outputs.RUN_REQUESTS),
            summaries=run_outputs("requests.summary.json"),
            tables=list(TABLE_FILES),
            slo=CAMPAIGN.doc.get("slo"),
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
