# semiseg: semi-supervised medical image segmentation, from raw data to the papers' tables.
#
#   snakemake --cores 2                                  # results/tables/demo.md (synthetic, smoke)
#   snakemake --cores 2 results/tables/acdc.md           # one table
#   snakemake --profile profiles/slurm results/tables/acdc.md
#
# The rules are wiring; every one calls `semiseg <stage>` (src/semiseg/cli.py).

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        default_targets(),
