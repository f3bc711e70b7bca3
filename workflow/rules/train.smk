# train: one job per dataset x method x ratio x seed (a GPU job on a cluster)


rule train:
    input:
        store=run_data("store"),
        split=run_data("split"),
    output:
        model=run_path("model.pt"),
        models=run_path("models.pt"),
        log_csv=run_path("train.csv"),
        config=run_path("config.json"),
    params:
        spec=train_spec,
        code=train_code,
        run_dir=lambda wildcards, output: os.path.dirname(output.model),
        wildcards=job_wildcards,
    threads: 2
    # How the job runs, not what it computes (not params: changing them re-runs nothing)
    resources:
        gpu=1,
        runtime=run_resource("runtime"),
        mem_mb=run_resource("mem_mb"),
        checkpoint_interval=run_resource("checkpoint_interval"),
    log:
        run_log("train"),
    shell:
        "semiseg --rule train --wildcards {params.wildcards:q} --log {log:q}"
        " train --spec {params.spec:q} --code-fingerprint {params.code}"
        " --store {input.store} --split {input.split} --out-dir {params.run_dir}"
        " --checkpoint-interval {resources.checkpoint_interval} --threads {threads}"
