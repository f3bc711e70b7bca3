# train: one job per dataset x method x ratio x seed (a GPU job on a cluster)


rule train:
    input:
        store=RESULTS + "/preprocessed/{dataset}/store.h5",
        split=RESULTS + "/splits/{dataset}/{ratio}.json",
    output:
        model=RUN + "/model.pt",
        log_csv=RUN + "/train.csv",
        config=RUN + "/config.json",
    params:
        spec=train_spec,
        code=train_code,
        run_dir=RUN,
    threads: 2
    resources:
        gpu=1,
        runtime=schedule_field("runtime"),
        mem_mb=schedule_field("mem_mb"),
    log:
        RESULTS + "/logs/train/{dataset}/{method}/{ratio}/seed{seed}.log",
    shell:
        "semiseg train --spec {params.spec:q} --code-fingerprint {params.code}"
        " --store {input.store} --split {input.split} --out-dir {params.run_dir}"
        " --threads {threads} 2> {log}"
