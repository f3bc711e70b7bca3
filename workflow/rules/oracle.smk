# The test-selection oracle of a table with `oracle: {every: K}` (docs/metrics.md): each run trained
# again with a snapshot every K iterations, every snapshot scored on the test set. Its own files
# under results/oracle/; no honest rule reads them, and `semiseg audit` of a cell never reaches them.


rule oracle_train:
    input:
        store=run_data("store"),
        split=run_data("split"),
    output:
        snapshots=directory(oracle_path("snapshots")),
        log_csv=oracle_path("train.csv"),
        config=oracle_path("config.json"),
    params:
        # the honest run's very spec: the same seed, the same data stream
        spec=train_spec,
        code=oracle_code,
        out_dir=lambda wildcards, output: os.path.dirname(output.config),
        wildcards=job_wildcards,
    threads: 2
    resources:
        gpu=1,
        runtime=run_resource("runtime"),
        mem_mb=run_resource("mem_mb"),
        checkpoint_interval=run_resource("checkpoint_interval"),
    log:
        oracle_log("oracle_train"),
    shell:
        "semiseg --rule oracle_train --wildcards {params.wildcards:q} --log {log:q}"
        " oracle-train --spec {params.spec:q} --every {wildcards.every} --code-fingerprint {params.code}"
        " --store {input.store} --split {input.split} --out-dir {params.out_dir}"
        " --checkpoint-interval {resources.checkpoint_interval} --threads {threads}"


rule oracle_evaluate:
    input:
        snapshots=oracle_path("snapshots"),
        store=run_data("store"),
        split=run_data("split"),
    output:
        test=directory(oracle_path("test")),
        summary=oracle_path(paths.ORACLE_SUMMARY),
    params:
        code=code_fingerprint("oracle-evaluate"),
        distance_unit=dataset_field("distance_unit"),
        wildcards=job_wildcards,
    threads: 2
    resources:
        gpu=1,
        runtime=oracle_infer_runtime,
        mem_mb=run_resource("infer_mem_mb"),
    log:
        oracle_log("oracle_evaluate"),
    shell:
        "semiseg --rule oracle_evaluate --wildcards {params.wildcards:q} --log {log:q}"
        " oracle-evaluate --snapshots {input.snapshots} --store {input.store} --split {input.split}"
        " --out {output.test} --summary {output.summary} --distance-unit {params.distance_unit}"
        " --threads {threads}"
