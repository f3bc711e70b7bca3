# figures drawn from trained runs: one rule per figure a method registers (its `FIGURES`, read
# by semiseg.method_sources), drawn from the seed-0 run of the catalogue entry named after the
# figure's algorithm, at the figure's dataset and ratio (and at a table's own test stride, if any).

for _figure in registered_figures().values():

    rule:
        name:
            _figure["rule"]
        input:
            weights=os.path.join(results(paths.run_dir("{dataset}", _figure["algorithm"], "{ratio}", 0, "{stride}")),
                                 _figure["weights"]),
            config=os.path.join(results(paths.run_dir("{dataset}", _figure["algorithm"], "{ratio}", 0, "{stride}")),
                                "config.json"),
            store=run_data("store"),
            split=run_data("split"),
        output:
            figure_file(_figure["name"]),
        params:
            # the loop's values as params: a shell command is formatted when its job runs, after the
            # loop has moved on, so naming `_figure` there would give every rule the last figure
            rule=_figure["rule"],
            name=_figure["name"],
            run_dir=lambda wildcards, input: str(Path(input.config).parent),
            slices=4,
            code=code_fingerprint("figure"),
            wildcards=job_wildcards,
        log:
            figure_log(_figure["name"]),
        shell:
            "semiseg --rule {params.rule} --wildcards {params.wildcards:q} --log {log:q}"
            " figure {params.name} --run-dir {params.run_dir} --store {input.store} --split {input.split}"
            " --slices {params.slices} --out {output}"
