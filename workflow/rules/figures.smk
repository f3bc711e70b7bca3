# figures drawn from trained runs: ALHVR's Figure 1 (image, both predictions, Ω1/Ω2/Ω3 map)

# The run a region figure is drawn from: ALHVR, seed 0, at the figure's dataset and ratio.
REGION_FIGURE_RUN = results(paths.run_dir("{dataset}", "alhvr", "{ratio}", 0))


rule region_figure:
    input:
        models=os.path.join(REGION_FIGURE_RUN, "models.pt"),
        config=os.path.join(REGION_FIGURE_RUN, "config.json"),
        store=results(paths.store("{dataset}")),
        split=results(paths.split("{dataset}", "{ratio}")),
    output:
        results("figures/alhvr_regions_{dataset}_{ratio}.png"),
    params:
        run_dir=lambda wildcards, input: str(Path(input.config).parent),
        slices=4,
        code=code_fingerprint("figure"),
        wildcards=job_wildcards,
    log:
        results("logs/figures/alhvr_regions_{dataset}_{ratio}.log"),
    shell:
        "semiseg --rule region_figure --wildcards {params.wildcards:q}"
        " figure regions --run-dir {params.run_dir} --store {input.store} --split {input.split}"
        " --slices {params.slices} --out {output} 2> {log}"
