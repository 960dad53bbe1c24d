# Paper figures (PDF with embedded fonts + PNG) and the data behind each one (CSV), from the
# Parquet tables, the campaign record (matrix order, SLO) and any measured runs it names.  One
# style sheet: tpsim/campaign/tpsim.mplstyle.


rule figures:
    input:
        **figure_inputs(),
    output:
        pdf=figure_outputs("pdf"),
        png=[
            report(
                f,
                caption=f"../report/{outputs.caption_of(name)}.rst",
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
