# table: the paper-style comparison, mean +- std over seeds, paper values beside ours


rule table:
    input:
        descriptor=table_descriptor,
        metrics=table_metrics,
        external=table_external_metrics,
        # a table with `oracle:` only: each run's best snapshot on the test set (rules/oracle.smk)
        oracle=table_oracle,
    output:
        # in `snakemake --report` through its page (report.smk), whose parameters hold no schedule
        results(paths.table("{table}")),
    params:
        spec=table_spec,
        wildcards=job_wildcards,
    log:
        log_path("tables", "{table}"),
    shell:
        "semiseg --rule table --wildcards {params.wildcards:q} --log {log:q}"
        " table --spec {params.spec:q} --descriptor {input.descriptor}"
        " --metrics {input.metrics} {input.external} --oracle {input.oracle} --out {output}"
