# report pages: one self-contained HTML page per table (the table, per-class metrics, Dice
# against ratio with the papers' points, job parameters, learning curves, overlays, the
# figures its methods register), the items of `snakemake --report report.html`. A predictions
# row's metrics.csv is an input: the page shows its result (evaluation only).


rule table_report:
    input:
        table=results(paths.table("{table}")),
        store=table_store,
        metrics=table_run_files("metrics.csv"),
        train_logs=table_run_files("train.csv"),
        configs=table_run_files("config.json"),
        predictions=table_run_files("predictions"),
        external=table_external_metrics,
        figures=table_run_figures,
    output:
        report(
            results(paths.report_page("{table}")),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    params:
        spec=table_report_spec,
        title=lambda wildcards: CFG["tables"][wildcards.table]["title"],
        runs=lambda wildcards, input: [os.path.dirname(m) for m in input.metrics],
        code=code_fingerprint("report"),
        wildcards=job_wildcards,
    log:
        log_path("report", "{table}"),
    shell:
        "semiseg --rule table_report --wildcards {params.wildcards:q} --log {log:q}"
        " report --spec {params.spec:q} --table {input.table} --store {input.store}"
        " --runs {params.runs} --external {input.external} --figures {input.figures} --out {output}"


# A target that names no table, e.g. a mistyped `snakemake results/tables/acdcc.md`: the input
# function stops the run with the list of tables. Neither rule ever runs a job.
rule unknown_table:
    input:
        unknown_table,
    output:
        results(paths.table("{name}")),
    wildcard_constraints:
        name=NOT_A_TABLE,
    log:
        log_path("unknown_table", "{name}"),
    shell:
        "false"


rule unknown_report_page:
    input:
        unknown_table,
    output:
        results(paths.report_page("{name}")),
    wildcard_constraints:
        name=NOT_A_TABLE,
    log:
        log_path("unknown_report_page", "{name}"),
    shell:
        "false"
