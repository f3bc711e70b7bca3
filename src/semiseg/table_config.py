"""What the config loader checks and derives for tables: duplicate entries, the bootstrap's
fewest resamples, and a table's own test stride (checked, the stride its runs are named by, and
the words its footer uses for the sliding window). :mod:`semiseg.config` calls these while it loads the
catalogues and re-exports them."""

from __future__ import annotations

import math
import os
import re

from semiseg.schema import ConfigError

__all__ = ["EXTERNAL_PREFIX", "add_external_rows", "bootstrap_min_resamples", "check_table_strides",
           "check_window_stride", "comparison_problems", "external_key", "is_external", "oracle_problems", "run_stride",
           "sliding_window_note", "table_duplicates"]


def bootstrap_min_resamples(confidence: float) -> int:
    """The fewest resamples a table's bootstrap interval at ``confidence`` may have: enough that
    each tail of the percentile interval holds a resampled value, ``resamples * (1 - confidence)
    / 2 >= 1``.

    >>> bootstrap_min_resamples(0.95), bootstrap_min_resamples(0.9)
    (40, 20)
    """
    return math.ceil(round(2.0 / (1.0 - confidence), 9))  # round: 2 / 0.05 is 40.00000000000004


#: The start of a predictions row's key: no method of the catalogue may start with it.
EXTERNAL_PREFIX = "external_"


def external_key(label: str) -> str:
    """The key a predictions row stands under where a method row has its method: in the table's
    spec and results, the ``results/external/<table>/<key>/`` folder and ``semiseg audit``.

    >>> external_key("nnU-Net (labeled only)")
    'external_nnu_net_labeled_only'
    """
    return EXTERNAL_PREFIX + (re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "row")


def is_external(row: dict) -> bool:
    """Whether a table row scores another tool's predictions (a ``predictions`` row)."""
    return "predictions" in row


def add_external_rows(tables: dict, t_origin: dict, methods: dict, root) -> None:
    """Give each predictions row (``{predictions, label, ratio}``) the fields a method row has,
    so that the rest of the code reads both alike: ``method`` its :func:`external_key`,
    ``ratios`` its one ratio, ``run`` true, and ``predictions`` made absolute (a relative folder is
    taken from the workflow directory ``root``). A key that names a method of the catalogue, or
    two rows whose labels give one key, is a :class:`ConfigError` naming the row."""
    for name, table in tables.items():
        keys: dict[str, int] = {}
        for i, row in enumerate(table["rows"]):
            if not is_external(row) or "method" in row:
                continue
            key = external_key(row["label"])
            where = f"{t_origin[name]}: {name}.rows.{i}"
            if key in methods:
                raise ConfigError(f"{where}.label: its key {key!r} is a method of the catalogue; rename the method "
                                  f"(keys starting with {EXTERNAL_PREFIX!r} are the predictions rows')")
            if key in keys:
                raise ConfigError(f"{where}.label: {row['label']!r} gives the key {key!r}, as rows.{keys[key]}'s "
                                  "label does; give the rows labels that differ in letters or digits")
            keys[key] = i
            row.update(method=key, ratios=[int(row["ratio"])], run=True,
                       predictions=os.path.normpath(os.path.join(os.fspath(root), row["predictions"])))


def table_duplicates(table: dict) -> list[str]:
    """What a table lists twice: a seed, a ratio of a row, a row label, or a method at one ratio
    in two rows (the same runs twice: their seeds would count twice in mean ± std). Empty if
    none. Checked when the config loads and again where the table is built."""
    problems = []
    seeds = list(table.get("seeds", []))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        problems.append(f"seeds: seed(s) {', '.join(map(str, repeated))} listed twice; each seed once")
    seen_ratio: dict[tuple[str, int], int] = {}
    seen_label: dict[str, int] = {}
    for i, row in enumerate(table.get("rows", [])):
        ratios = [int(r) for r in row.get("ratios", [])]
        twice = sorted({r for r in ratios if ratios.count(r) > 1})
        if twice:
            problems.append(f"rows.{i}.ratios: ratio(s) {', '.join(map(str, twice))} listed twice")
        label = row.get("label", row.get("method"))
        if label in seen_label:
            problems.append(f"rows.{i}: label {label!r} is also rows.{seen_label[label]}'s; each row's label once")
        seen_label.setdefault(label, i)
        for r in dict.fromkeys(ratios):
            key = (row.get("method"), r)
            if key in seen_ratio:
                problems.append(f"rows.{i}: method {key[0]!r} at ratio {r} is also in rows.{seen_ratio[key]}; "
                                f"the same runs in two rows")
            seen_ratio.setdefault(key, i)
    return problems


def comparison_problems(table: dict) -> list[str]:
    """What is wrong with a table's paired comparisons: a ``difference`` column without
    ``bootstrap`` (its interval's settings), a ``compare_to`` that names no other row run at
    each of the row's ratios (a predictions row is none). Empty if nothing."""
    problems = []
    if "difference" in (table.get("columns") or []) and not table.get("bootstrap"):
        problems.append("columns: 'difference' needs bootstrap (its interval's resamples, confidence, seed), "
                        "e.g. bootstrap: {resamples: 1000}")
    # a predictions row has no seeds to pair by: no row compares with it
    run = [row for row in table.get("rows", []) if row.get("run", True) and not is_external(row)]
    for i, row in enumerate(table.get("rows", [])):
        named = row.get("compare_to")
        if named is None:
            continue
        for ratio in row.get("ratios", []):
            if named == row.get("method") or not any(o["method"] == named and ratio in o["ratios"] for o in run):
                problems.append(f"rows.{i}.compare_to: {named!r} is no other row of the table run at ratio {ratio}")
                break
    return problems


def oracle_problems(table: dict) -> list[str]:
    """What is wrong with a table's ``oracle``: its best-on-test column stands beside the Dice
    column, so a ``columns`` list that leaves Dice out has nothing to set it beside. Empty if nothing."""
    columns = table.get("columns")
    if table.get("oracle") and columns and "dice" not in columns:
        return ["oracle: its best-on-test column stands beside the Dice column, which columns leaves out; "
                "add dice to columns"]
    return []


def check_window_stride(stride, patch_size, field: str, dataset: str) -> None:
    """Refuse a sliding-window ``stride`` larger than the patch on an axis (:class:`ConfigError`
    naming ``field``): consecutive windows would leave a gap of voxels that no window predicts.

    >>> check_window_stride([16, 96, 96], [96, 96, 96], "x.stride", "pancreas")
    >>> check_window_stride([16, 160, 160], [96, 96, 96], "x.test_stride", "pancreas")
    Traceback (most recent call last):
    ...
    semiseg.schema.ConfigError: x.test_stride: [16, 160, 160] steps further than pancreas's patch [96, 96, 96] on the y, x axis: windows would leave voxels that no window predicts; allowed: at most the patch on each axis (z, y, x)
    """
    over = [axis for axis, s, p in zip("zyx", stride, patch_size) if s > p]
    if over:
        raise ConfigError(f"{field}: {list(stride)} steps further than {dataset}'s patch {list(patch_size)} on the "
                          f"{', '.join(over)} axis: windows would leave voxels that no window predicts; allowed: "
                          "at most the patch on each axis (z, y, x)")


def check_table_strides(datasets: dict, tables: dict, t_origin: dict) -> None:
    """A table's ``stride`` (another test stride than its 3D dataset's): 3 numbers, for a 3D
    dataset, at most its patch on each axis (:class:`ConfigError` naming the table's field)."""
    for name, table in tables.items():
        ds = datasets.get(table["dataset"])
        if "stride" not in table or ds is None:  # an unknown dataset is reported with the table's other fields
            continue
        where = f"{t_origin[name]}: {name}.stride"
        if ds["dims"] != 3 or len(table["stride"]) != 3:
            raise ConfigError(f"{where}: a test stride is for a 3D dataset, 3 numbers (z, y, x); "
                              f"{table['dataset']!r} is {ds['dims']}D")
        check_window_stride(table["stride"], ds["patch_size"], where, table["dataset"])


def run_stride(table: dict, datasets: dict) -> list[int] | None:
    """The test stride of a table's runs where it is not its dataset's: the table's ``stride``,
    else None (the dataset's own; such runs are shared with the dataset's other tables).

    A run at another stride is a run of its own (the stride also scores the validation that picks
    the checkpoint): :func:`semiseg.paths.run_key` names it, :func:`semiseg.config.run_spec`
    gives it the stride. Its data is the dataset's, fetched, preprocessed and split once.

    >>> datasets = {"brats": {"stride": [64, 64, 64]}}
    >>> run_stride({"dataset": "brats", "stride": [16, 16, 16]}, datasets)
    [16, 16, 16]
    >>> run_stride({"dataset": "brats", "stride": [64, 64, 64]}, datasets), run_stride({"dataset": "brats"}, datasets)
    (None, None)
    """
    stride = table.get("stride")
    if stride is None or list(stride) == list(datasets[table["dataset"]]["stride"]):
        return None
    return list(stride)


def sliding_window_note(cfg: dict, dataset: str, used: dict[str, list[int]] | None = None,
                        schedule: str | None = None, stride: list[int] | None = None) -> str:
    """The footer's words for a 3D table's test windows: patch and stride (z, y, x), as its runs use
    them. ``used`` maps each run row's label to the stride its runs test at (``run_spec``'s
    ``dataset.stride``: a schedule's ``test_stride`` where one is set, else the table's or the
    dataset's), ``schedule`` names the schedule they run and ``stride`` is the table's own
    (:func:`run_stride`). The dataset's stride is named as its protocol (the table's own, beside
    the dataset's default); a stride that is neither is named as the schedule's ``test_stride``,
    per row where rows differ.

    >>> cfg = {"datasets": {"la": {"patch_size": [80, 112, 112], "stride": [4, 18, 18]}}}
    >>> sliding_window_note(cfg, "la", {"U-Net": [4, 18, 18]}, "paper")
    '80 x 112 x 112 windows (z, y, x), stride 4 x 18 x 18'
    >>> sliding_window_note(cfg, "la", {"U-Net": [80, 112, 112], "MT": [80, 112, 112]}, "smoke")
    "80 x 112 x 112 windows (z, y, x), stride 80 x 112 x 112 (the smoke schedule's test_stride; la's: 4 x 18 x 18)"
    >>> sliding_window_note(cfg, "la", {"U-Net": [4, 18, 18], "MT": [80, 112, 112]}, "smoke")
    "80 x 112 x 112 windows (z, y, x), stride 4 x 18 x 18 (U-Net; la's), 80 x 112 x 112 (MT; the smoke schedule's test_stride)"
    >>> sliding_window_note(cfg, "la", {"U-Net": [8, 18, 18]}, "paper", stride=[8, 18, 18])
    "80 x 112 x 112 windows (z, y, x), stride 8 x 18 x 18 (this table's; la's default: 4 x 18 x 18)"
    """
    ds = cfg["datasets"][dataset]
    x = lambda v: " x ".join(str(int(n)) for n in v)  # noqa: E731
    own = x(stride if stride is not None else ds["stride"])
    default = f"{dataset}'s default: {x(ds['stride'])}" if stride is not None else ""
    by_stride: dict[str, list[str]] = {}
    for label, used_stride in (used or {}).items():
        by_stride.setdefault(x(used_stride), []).append(label)
    schedule_words = f"the {schedule} schedule's test_stride" if schedule else "a schedule's test_stride"
    text = f"{x(ds['patch_size'])} windows (z, y, x), stride "
    if not by_stride or list(by_stride) == [own]:  # the dataset's (or the table's) own stride
        return text + own + (f" (this table's; {default})" if stride is not None else "")
    if len(by_stride) == 1:  # every run at a schedule's test_stride
        own_words = f"this table's: {own}; {default}" if stride is not None else f"{dataset}'s: {own}"
        return text + f"{next(iter(by_stride))} ({schedule_words}; {own_words})"
    own_words = "this table's" if stride is not None else f"{dataset}'s"
    return text + ", ".join(f"{strides} ({', '.join(labels)}; {own_words if strides == own else schedule_words})"
                            for strides, labels in by_stride.items())
