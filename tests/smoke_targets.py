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

# LA-mini (../shared/data/LA-mini): 20 of the 80 train volumes and 4 test volumes
LA_TABLES = ["la", "sgrs_la", "sgrs_switches", "buarl_la", "crln_la"]
LA_FIGURES: list[str] = []
