# infer (sliding window / slice-wise) -> evaluate (per case x class metrics)


rule infer:
    input:
        model=RUN + "/model.pt",
        config=RUN + "/config.json",
        store=RESULTS + "/preprocessed/{dataset}/store.h5",
        split=RESULTS + "/splits/{dataset}/{ratio}.json",
    output:
        directory(RUN + "/predictions"),
    params:
        run_dir=RUN,
        code=code_fingerprint("infer"),
    threads: 2
    resources:
        gpu=1,
        runtime=60,
        mem_mb=8000,
    log:
        RESULTS + "/logs/infer/{dataset}/{method}/{ratio}/seed{seed}.log",
    shell:
        "semiseg infer --run-dir {params.run_dir} --store {input.store} --split {input.split}"
        " --out {output} --threads {threads} 2> {log}"


rule evaluate:
    input:
        predictions=RUN + "/predictions",
        store=RESULTS + "/preprocessed/{dataset}/store.h5",
    output:
        RUN + "/metrics.csv",
    params:
        code=code_fingerprint("evaluate"),
    log:
        RESULTS + "/logs/evaluate/{dataset}/{method}/{ratio}/seed{seed}.log",
    shell:
        "semiseg evaluate --predictions {input.predictions} --store {input.store} --out {output} 2> {log}"
