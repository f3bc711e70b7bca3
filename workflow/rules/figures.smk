# figures drawn from trained runs: ALHVR's Figure 1 (image, both predictions, Ω1/Ω2/Ω3 map);
# BUARL's Figure 5 (the prediction's entropy, its 95/97/99th-percentile regions)

# The run a region figure is drawn from: ALHVR, seed 0, at the figure's dataset and ratio.
REGION_FIGURE_RUN = results(paths.run_dir("{dataset}", "alhvr", "{ratio}", 0))


rule region_figure:
    input:
        models=os.path.join(REGION_FIGURE_RUN, "models.pt"),
        config=os.path.join(REGION_FIGURE_RUN, "config.json"),
        store=run_data("store"),
        split=run_data("split"),
    output:
        figure_file("alhvr_regions"),
    params:
        run_dir=lambda wildcards, input: str(Path(input.config).parent),
        slices=4,
        code=code_fingerprint("figure"),
        wildcards=job_wildcards,
    log:
        figure_log("alhvr_regions"),
    shell:
        "semiseg --rule region_figure --wildcards {params.wildcards:q}"
        " figure regions --run-dir {params.run_dir} --store {input.store} --split {input.split}"
        " --slices {params.slices} --out {output} 2> {log}"


# The run BUARL's entropy figure is drawn from: BUARL on BCP, seed 0, at the figure's dataset and ratio.
ENTROPY_FIGURE_RUN = results(paths.run_dir("{dataset}", "buarl_bcp", "{ratio}", 0))


rule entropy_figure:
    input:
        model=os.path.join(ENTROPY_FIGURE_RUN, "model.pt"),
        config=os.path.join(ENTROPY_FIGURE_RUN, "config.json"),
        store=run_data("store"),
        split=run_data("split"),
    output:
        figure_file("buarl_entropy"),
    params:
        run_dir=lambda wildcards, input: str(Path(input.config).parent),
        slices=4,
        code=code_fingerprint("figure"),
        wildcards=job_wildcards,
    log:
        figure_log("buarl_entropy"),
    shell:
        "semiseg --rule entropy_figure --wildcards {params.wildcards:q}"
        " figure entropy --run-dir {params.run_dir} --store {input.store} --split {input.split}"
        " --slices {params.slices} --out {output} 2> {log}"
