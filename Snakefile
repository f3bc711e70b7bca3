# The workflow is workflow/Snakefile (the layout of the Snakemake workflow catalog, where plain
# `snakemake` also finds it); this file runs the same workflow for `snakemake --snakefile
# Snakefile` and for tools that look for a Snakefile at the root.

include: "workflow/Snakefile"


# An included file's `default_target` does not carry over: name the same targets here.
rule default:
    default_target: True
    input:
        rules.all.input,
