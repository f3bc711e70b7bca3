# table: the paper-style comparison, mean +- std over seeds, paper values beside ours


rule table:
    input:
        descriptor=table_descriptor,
        metrics=table_metrics,
    output:
        report(
            results("tables/{table}.md"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    params:
        spec=table_spec,
    conda:
        "../envs/semiseg.yaml"
    log:
        results("logs/tables/{table}.log"),
    shell:
        "semiseg table --spec {params.spec:q} --descriptor {input.descriptor}"
        " --metrics {input.metrics} --out {output} 2> {log}"
