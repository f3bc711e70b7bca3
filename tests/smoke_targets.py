"""What the real-data smoke builds make, each in ONE Snakemake call (tests/conftest.py).

A table built on the real data with the smoke schedule and one seed proves that its protocol runs
end to end; one call per dataset lets tables share the runs they have in common. Adding a table
here is all a test needs to get it built: its assertions then use the `acdc_smoke` or `la_smoke`
fixture (the results directory of that build).
"""

# the real ACDC set (../shared/data/ACDC)
ACDC_TABLES = ["acdc", "alhvr_acdc", "alhvr_ablation", "alhvr_beta", "alhvr_regions"]
ACDC_TABLES += ["buarl_acdc", "buarl_modules", "buarl_regions", "buarl_mu", "buarl_remove"]
ACDC_FIGURES = ["figures/alhvr_regions_acdc_10.png"]
ACDC_FIGURES += ["figures/buarl_entropy_acdc_10.png"]
# The build's first cut: each of its runs trains ACDC_ITERATIONS iteration(s), validated and
# checkpointed at the end, instead of the smoke schedule's 2 for ACDC. One step of every method
# (BCP's pre-training is already empty at 2: round(0.25 x 2) = 0) proves what two did, that each
# run goes through training, validation, inference and its table cells.
ACDC_ITERATIONS = 1
# And its second: the literature's baselines (BASELINES) do not run in it (None: their rows show the
# papers' values only). Their 2D form is built end to end by tests/test_baselines_workflow.py, and
# the ACDC protocol they would run is the one the build proves for every other method.
ACDC_BASELINE_RATIO = None
# And its third: of the sweeps of one number or one switch over the same method (the values each
# tested one by one on tiny tensors: tests/test_alhvr.py, tests/test_buarl.py), the rows of
# ACDC_SWEEP_ROWS run (by method), the others show the papers' values only: a sweep's rows differ
# from each other in nothing a second and third value would prove again.
ACDC_SWEEP_ROWS = {"alhvr_beta": ["alhvr_beta_05", "alhvr"],
                   "alhvr_regions": ["cps_regions_drop_none", "cps_regions_drop_r1r2"],
                   "buarl_mu": ["buarl_bcp", "buarl_bcp_mu_99_99"],
                   "buarl_regions": ["buarl_bcp_crl_url", "buarl_bcp"]}
# And its fourth: a method's run at another split proves what its run at 7 labeled and the
# labeled-only U-Net's run at that split prove between them (the split is the dataset's, the
# method's step the same), so at 3 and 14 labeled only the rows of ACDC_RATIO_ROWS run (by method:
# the U-Net at every split, the cells the tests read); the others' cells at those ratios are left
# out of the build (not "not run": the rows that run keep their ratios' papers' values).
ACDC_RATIO_ROWS = {5: ["supervised", "bcp", "buarl_bcp", "buarl_mt"], 20: ["supervised"]}

# LA-mini (../shared/data/LA-mini): 20 of the 80 train volumes and 4 test volumes
LA_TABLES = ["la", "sgrs_la", "buarl_la", "crln_la"]
LA_FIGURES: list[str] = []
# The build's second cut: the literature's baselines (BASELINES, below) run at LA_BASELINE_RATIO only.
LA_BASELINE_RATIO = 10
# And its third, as ACDC_RATIO_ROWS: at 4 and 16 labeled only these rows run.
LA_RATIO_ROWS = {5: ["supervised", "bcp", "buarl_mt", "sgrs"], 20: ["supervised", "ua_mt", "crln"]}

# The test-selection oracle (docs/metrics.md) on the real volumes: a table of the tests' own, written
# into the LA build's config copy, of two rows whose honest runs the LA tables already make, a
# snapshot every iteration (the smoke schedule trains 1 on LA): two extra trainings and scorings.
LA_ORACLE_TABLES = {"la_oracle": {
    "title": "LA test-selection oracle", "dataset": "la", "seeds": [0], "oracle": {"every": 1},
    "rows": [{"method": "supervised", "ratios": [10], "label": "V-Net (labeled only)"},
             {"method": "mean_teacher", "ratios": [10], "label": "MT"}]}}

# The LA ablation tables: each row is an LA table's method with other values of the same parameters
# (tested one by one on tiny tensors), so what a build proves is that every variant runs end to
# end on the real volumes. Built on LA-mini with the smoke schedule and three cuts that keep their
# runs to minutes on 2 cores: patches of LA_ABLATION_PATCH (Z, Y, X) instead of 80 x 112 x 112,
# with a test stride of one such patch; each table at one ratio (SGRS-Net's Tables 5-7 have a
# second column at 8 labeled: the same runs on another split); and of the τ sweep, whose rows are
# one method at six values of one number (each value's band checked in tests/test_sgrs.py),
# the rows of LA_ABLATION_ROWS: SGRS-Net and one other τ. Without the cuts it is the same
# command on the repository's catalogue: `snakemake results/tables/sgrs_components.md ...`.
LA_ABLATION_TABLES = ["sgrs_components", "sgrs_regions", "sgrs_augment", "sgrs_tau", "sgrs_switches"]
LA_ABLATION_TABLES += ["crln_components", "crln_dim", "crln_rectify", "crln_prototypes"]
LA_ABLATION_PATCH = [32, 48, 48]
LA_ABLATION_RATIO = {t: 5 for t in LA_ABLATION_TABLES if t.startswith("sgrs")}
LA_ABLATION_RATIO |= {t: 10 for t in LA_ABLATION_TABLES if t.startswith("crln")}
LA_ABLATION_ROWS = {"sgrs_tau": ["sgrs_tau_0244", "sgrs"]}  # the rows kept, by method; other tables keep all

# The literature's baselines, whose rows the LA-mini build runs at one ratio (LA_BASELINE_RATIO) and
# the ACDC build not at all (ACDC_BASELINE_RATIO): each is proven end to end on the tiny data.
BASELINES = {"urpc", "mc_net", "mc_net_plus", "ss_net", "caml", "dtc", "sassnet", "mcf", "unimatch"}
