# fetch -> preprocess -> split


rule fetch:
    output:
        directory(results("raw/{dataset}")),
    params:
        source=dataset_source,
        code=code_fingerprint("fetch"),
    conda:
        "../envs/semiseg.yaml"
    log:
        results("logs/fetch/{dataset}.log"),
    shell:
        "semiseg fetch --dataset {wildcards.dataset} --source {params.source:q} --out {output} 2> {log}"


rule preprocess:
    input:
        results("raw/{dataset}"),
    output:
        store=results("preprocessed/{dataset}/store.h5"),
        descriptor=results("preprocessed/{dataset}/dataset.json"),
    params:
        layout=lambda wildcards: CFG["datasets"][wildcards.dataset]["source"]["layout"],
        labels=dataset_labels,
        dims=dataset_field("dims"),
        code=code_fingerprint("preprocess"),
    conda:
        "../envs/semiseg.yaml"
    log:
        results("logs/preprocess/{dataset}.log"),
    shell:
        "semiseg preprocess --dataset {wildcards.dataset} --layout {params.layout} --raw {input}"
        " --labels {params.labels:q} --dims {params.dims}"
        " --store {output.store} --descriptor {output.descriptor} 2> {log}"


rule split:
    input:
        results("preprocessed/{dataset}/dataset.json"),
    output:
        results("splits/{dataset}/{ratio}.json"),
    params:
        labeled=labeled_patients,
        code=code_fingerprint("split"),
    conda:
        "../envs/semiseg.yaml"
    log:
        results("logs/split/{dataset}/{ratio}.log"),
    shell:
        "semiseg split --descriptor {input} --ratio {wildcards.ratio}"
        " --labeled-patients {params.labeled} --out {output} 2> {log}"
