# fetch -> preprocess -> split


# Downloads run where snakemake runs (a cluster's login node usually reaches the internet, its
# compute nodes often do not); generating a synthetic dataset is as light.
localrules:
    fetch,


rule fetch:
    output:
        directory(results(paths.raw_dir("{dataset}"))),
    params:
        source=dataset_source,
        shipped_lists=dataset_shipped_lists,
        code=code_fingerprint("fetch"),
        wildcards=job_wildcards,
    log:
        log_path("fetch", "{dataset}"),
    shell:
        "semiseg --rule fetch --wildcards {params.wildcards:q} --log {log:q}"
        " fetch --dataset {wildcards.dataset} --source {params.source:q} --out {output}"


rule preprocess:
    input:
        results(paths.raw_dir("{dataset}")),
    output:
        store=results(paths.store("{dataset}")),
        descriptor=results(paths.descriptor("{dataset}")),
    params:
        layout=lambda wildcards: CFG["datasets"][wildcards.dataset]["source"]["layout"],
        labels=dataset_labels,
        dims=dataset_field("dims"),
        reader_params=dataset_reader_params,
        code=code_fingerprint("preprocess"),
        wildcards=job_wildcards,
    log:
        log_path("preprocess", "{dataset}"),
    shell:
        "semiseg --rule preprocess --wildcards {params.wildcards:q} --log {log:q}"
        " preprocess --dataset {wildcards.dataset} --layout {params.layout} --raw {input}"
        " --labels {params.labels:q} --dims {params.dims} --params {params.reader_params:q}"
        " --store {output.store} --descriptor {output.descriptor}"


rule split:
    input:
        results(paths.descriptor("{dataset}")),
    output:
        results(paths.split("{dataset}", "{ratio}")),
    params:
        labeled=labeled_patients,
        code=code_fingerprint("split"),
        wildcards=job_wildcards,
    log:
        log_path("split", "{dataset}/{ratio}"),
    shell:
        "semiseg --rule split --wildcards {params.wildcards:q} --log {log:q}"
        " split --descriptor {input} --ratio {wildcards.ratio}"
        " --labeled-patients {params.labeled} --out {output}"
