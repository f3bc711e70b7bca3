# The workflow is workflow/Snakefile (the layout of the Snakemake workflow catalog, where plain
# `snakemake` also finds it); this file runs the same workflow for `snakemake --snakefile
# Snakefile` and for tools that look for a Snakefile at the root.
#
# `include:` would drop the included file's default target (rule `all`); this is the include
# Snakemake's own modules use, which keeps it.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
