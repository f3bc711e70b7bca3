# Input functions of the report pages (rules/report.smk); no rule lives here.
import re


def table_run_files(name):
    """The file `name` of every run of the table (metrics.csv, train.csv, config.json, predictions),
    at the table's own test stride, if any."""
    return lambda wildcards: [
        results(paths.run_file(d, m, r, s, name, stride=table_stride(CFG, wildcards.table)))
        for d, m, r, s in table_runs(CFG, wildcards.table)
    ]


def table_store(wildcards):
    return results(paths.store(CFG["tables"][wildcards.table]["dataset"]))


def table_run_figures(wildcards):
    """The figures the methods register (semiseg.method_sources, rules/figures.smk), at each ratio
    of every row of the table that runs the figure's catalogue entry (drawn from seed 0's run)."""
    table = CFG["tables"][wildcards.table]
    if 0 not in [int(s) for s in table["seeds"]]:
        return []
    return [
        results(paths.figure(fig["name"], table["dataset"], ratio, table_stride(CFG, wildcards.table)))
        for row in table["rows"]
        for fig in registered_figures().values()
        if row["method"] == fig["algorithm"] and row.get("run", True)
        for ratio in row["ratios"]
    ]


def table_report_spec(wildcards):
    """What the page shows of the catalogue entry. No schedule: the page reads it from the runs
    themselves, so the report's parameters are the table's whatever --config the report is made with."""
    return json.dumps({"name": wildcards.table, "table": CFG["tables"][wildcards.table]},
                      sort_keys=True, separators=(",", ":"))


def report_pages():
    return [results(paths.report_page(t)) for t in CFG["settings"]["tables"]]


#: A name that is no table: the `name` of rules unknown_table and unknown_report_page, so that
#: they never compete with rules table and table_report (a table's name has no dot).
NOT_A_TABLE = r"(?!(?:%s)\.)[^/]+" % "|".join(map(re.escape, sorted(CFG["tables"])))


def unknown_table(wildcards):
    """Refuse a target that names no table (`snakemake results/tables/acdcc.md`) with the list of
    tables, where Snakemake would only say that no rule produces it."""
    raise ValueError(
        f"there is no table {wildcards.name!r}; the tables (config/tables/*.yaml) are: "
        f"{', '.join(sorted(CFG['tables']))}"
    )
