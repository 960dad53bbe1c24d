# Paper figures (PDF with embedded fonts + PNG) and the data behind each one (CSV), from the
# Parquet tables.  One style sheet: tpsim/campaign/tpsim.mplstyle.


rule figures:
    input:
        runs=f"{RES}/runs.parquet",
        requests=f"{RES}/requests.parquet",
        style=STYLE,
    output:
        pdf=figure_outputs("pdf"),
        png=[
            report(
                f,
                caption=f"../report/{name}.rst",
                category="Figures",
                labels={"figure": name},
            )
            for name, f in zip(FIGURES, figure_outputs("png"))
        ],
        csv=figure_outputs("csv"),
    log:
        f"{RES}/logs/figures.log",
    localrule: True
    conda:
        "../envs/tpsim.yaml"
    threads: len(FIGURES)  # drawn in parallel; Snakemake caps it at --cores
    params:
        names=FIGURES,
    script:
        "../scripts/figures.py"
