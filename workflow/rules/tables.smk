# table: the paper-style comparison, mean +- std over seeds, paper values beside ours


rule table:
    input:
        descriptor=table_descriptor,
        metrics=table_metrics,
    output:
        report(
            results(paths.table("{table}")),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    params:
        spec=table_spec,
        wildcards=job_wildcards,
    conda:
        "../envs/semiseg.yaml"
    log:
        results("logs/tables/{table}.log"),
    shell:
        "semiseg --rule table --wildcards {params.wildcards:q}"
        " table --spec {params.spec:q} --descriptor {input.descriptor}"
        " --metrics {input.metrics} --out {output} 2> {log}"
