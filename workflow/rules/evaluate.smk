# infer (sliding window / slice-wise) -> evaluate (per case x class metrics); another tool's
# predictions of a table's predictions row -> evaluate_external (the same metrics)


rule infer:
    input:
        model=run_path("model.pt"),
        config=run_path("config.json"),
        store=run_data("store"),
        split=run_data("split"),
    output:
        directory(run_path("predictions")),
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input.model),
        code=code_fingerprint("infer"),
        wildcards=job_wildcards,
    threads: 2
    resources:
        gpu=1,
        runtime=run_resource("infer_runtime"),
        mem_mb=run_resource("infer_mem_mb"),
    log:
        run_log("infer"),
    shell:
        "semiseg --rule infer --wildcards {params.wildcards:q} --log {log:q}"
        " infer --run-dir {params.run_dir} --store {input.store} --split {input.split}"
        " --out {output} --threads {threads}"


rule evaluate:
    input:
        predictions=run_path("predictions"),
        store=run_data("store"),
    output:
        run_path("metrics.csv"),
    params:
        code=code_fingerprint("evaluate"),
        distance_unit=dataset_field("distance_unit"),
        wildcards=job_wildcards,
    log:
        run_log("evaluate"),
    shell:
        "semiseg --rule evaluate --wildcards {params.wildcards:q} --log {log:q}"
        " evaluate --predictions {input.predictions} --store {input.store} --out {output}"
        " --distance-unit {params.distance_unit}"


rule evaluate_external:
    input:
        predictions=external_predictions,
        store=external_data("store"),
        split=external_data("split"),
    output:
        results(paths.external_file("{table}", "{key}")),
    params:
        sha256=external_sha256,
        code=code_fingerprint("evaluate-external"),
        distance_unit=external_distance_unit,
        wildcards=job_wildcards,
    log:
        log_path("evaluate_external", paths.external_key("{table}", "{key}")),
    shell:
        "semiseg --rule evaluate_external --wildcards {params.wildcards:q} --log {log:q}"
        " evaluate-external --predictions {input.predictions:q} --store {input.store} --split {input.split}"
        " --out {output} --distance-unit {params.distance_unit}"
