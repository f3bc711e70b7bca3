# fetch -> preprocess -> split


rule fetch:
    output:
        directory(RESULTS + "/raw/{dataset}"),
    params:
        source=dataset_source,
        code=code_fingerprint("fetch"),
    log:
        RESULTS + "/logs/fetch/{dataset}.log",
    shell:
        "semiseg fetch --dataset {wildcards.dataset} --source {params.source:q} --out {output} 2> {log}"


rule preprocess:
    input:
        RESULTS + "/raw/{dataset}",
    output:
        store=RESULTS + "/preprocessed/{dataset}/store.h5",
        descriptor=RESULTS + "/preprocessed/{dataset}/dataset.json",
    params:
        layout=lambda wildcards: CFG["datasets"][wildcards.dataset]["source"]["layout"],
        labels=dataset_labels,
        dims=dataset_field("dims"),
        code=code_fingerprint("preprocess"),
    log:
        RESULTS + "/logs/preprocess/{dataset}.log",
    shell:
        "semiseg preprocess --dataset {wildcards.dataset} --layout {params.layout} --raw {input}"
        " --labels {params.labels:q} --dims {params.dims}"
        " --store {output.store} --descriptor {output.descriptor} 2> {log}"


rule split:
    input:
        RESULTS + "/preprocessed/{dataset}/dataset.json",
    output:
        RESULTS + "/splits/{dataset}/{ratio}.json",
    params:
        labeled=labeled_patients,
        code=code_fingerprint("split"),
    log:
        RESULTS + "/logs/split/{dataset}/{ratio}.log",
    shell:
        "semiseg split --descriptor {input} --ratio {wildcards.ratio}"
        " --labeled-patients {params.labeled} --out {output} 2> {log}"
