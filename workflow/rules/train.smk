# train: one job per dataset x method x ratio x seed (a GPU job on a cluster)


rule train:
    input:
        store=results("preprocessed/{dataset}/store.h5"),
        split=results("splits/{dataset}/{ratio}.json"),
    output:
        model=run_path("model.pt"),
        models=run_path("models.pt"),
        log_csv=run_path("train.csv"),
        config=run_path("config.json"),
    params:
        spec=train_spec,
        code=train_code,
        run_dir=lambda wildcards, output: os.path.dirname(output.model),
    threads: 2
    resources:
        gpu=1,
        runtime=schedule_field("runtime"),
        mem_mb=schedule_field("mem_mb"),
    conda:
        "../envs/semiseg.yaml"
    log:
        results("logs/train/{dataset}/{method}/{ratio}/seed{seed}.log"),
    shell:
        "semiseg train --spec {params.spec:q} --code-fingerprint {params.code}"
        " --store {input.store} --split {input.split} --out-dir {params.run_dir}"
        " --threads {threads} 2> {log}"
