# Input functions of the report pages (rules/report.smk); no rule lives here.
import re


def table_run_files(name):
    """The file `name` of every run of the table (metrics.csv, train.csv, config.json, predictions)."""
    return lambda wildcards: [
        results(paths.run_file(d, m, r, s, name)) for d, m, r, s in table_runs(CFG, wildcards.table)
    ]


def table_store(wildcards):
    return results(paths.store(base_dataset(CFG, CFG["tables"][wildcards.table]["dataset"])))


#: The figures drawn from a method's seed-0 run, shown on the page of every table with that
#: method's row: ALHVR's regions, BUARL's entropy regions (rules/figures.smk).
RUN_FIGURES = {"alhvr": "alhvr_regions", "buarl_bcp": "buarl_entropy"}


def table_region_figures(wildcards):
    """The run figures (RUN_FIGURES) at each ratio of the table's `alhvr` and `buarl_bcp` rows
    (drawn from seed 0's run)."""
    table = CFG["tables"][wildcards.table]
    if 0 not in [int(s) for s in table["seeds"]]:
        return []
    return [
        results(paths.figure(RUN_FIGURES[row["method"]], table["dataset"], ratio))
        for row in table["rows"]
        if row["method"] in RUN_FIGURES and row.get("run", True)
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
