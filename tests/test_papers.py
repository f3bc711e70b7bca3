"""The paper catalogue (config/papers/*.yaml) and the tables that cite it (semiseg.papers): every
published value is typed once in config/, the shipped tables show the papers' values they showed
when each table typed its own, and a wrong citation fails at load naming the file and the field.
Reads the YAML files and the config: seconds."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import REPO, write_yaml
from semiseg.config import ConfigError, load_config
from semiseg.papers import cite_references, paper_tables
from semiseg.references import METRICS, reference_sources, reference_values
from semiseg.reporting.tables import format_references

#: Every shipped table's reference cells ("method/ratio/metric" -> the printed papers' values) as
#: the tables rendered them when each typed its papers' values itself (commit 9c48692, before the
#: catalogue), recorded once from that loader and format_references.
BEFORE = json.loads((REPO / "tests" / "fixtures" / "reference_cells.json").read_text())

#: The cells the catalogue changed on purpose, with their rendering now (None: no paper value).
#: Pancreas-CT: CRLN's MC-Net+ and BCP values are its Table 3's best-checkpoint rows, which the
#: table printed under the last-checkpoint tag; the cell now says so, as crln_pancreas always did.
#: SGRS-Net's Table 2 prints URPC's ASD at 4 labeled as "3 65": la.yaml left it out, sgrs_la.yaml
#: read it as 3.65; typed once, it is left out of both (tests/test_la.py holds la's reading).
CHANGED = {
    ("pancreas", "bcp/20/dice"): "(paper: CRLN T3 best 82.91)",
    ("pancreas", "bcp/20/jaccard"): "(paper: CRLN T3 best 70.97)",
    ("pancreas", "bcp/20/hd95"): "(paper: CRLN T3 best 6.43)",
    ("pancreas", "bcp/20/asd"): "(paper: CRLN T3 best 2.25)",
    ("pancreas", "mc_net_plus/10/dice"): "(paper: SGRS-Net T3 70.00; CRLN T3 best 69.44)",
    ("pancreas", "mc_net_plus/10/jaccard"): "(paper: SGRS-Net T3 55.66; CRLN T3 best 55.16)",
    ("pancreas", "mc_net_plus/10/hd95"): "(paper: SGRS-Net T3 16.03; CRLN T3 best 16.72)",
    ("pancreas", "mc_net_plus/10/asd"): "(paper: SGRS-Net T3 3.87; CRLN T3 best 3.74)",
    ("pancreas", "mc_net_plus/20/dice"): "(paper: CRLN T3 best 78.95)",
    ("pancreas", "mc_net_plus/20/jaccard"): "(paper: CRLN T3 best 66.37)",
    ("pancreas", "mc_net_plus/20/hd95"): "(paper: CRLN T3 best 8.78)",
    ("pancreas", "mc_net_plus/20/asd"): "(paper: CRLN T3 best 1.79)",
    ("sgrs_la", "urpc/5/asd"): None,
}


def reference_cells(table: dict) -> dict[str, str]:
    """The table's papers' values as its cells print them, "method/ratio/metric" -> text."""
    values = reference_values(table)
    cells = {}
    for row in table["rows"]:
        for ratio in row["ratios"]:
            for metric in METRICS:
                refs = [(tag, float(cell[metric])) for tag, cell in values.get(row["method"], {}).get(int(ratio), [])
                        if metric in cell]
                if refs:
                    cells[f"{row['method']}/{ratio}/{metric}"] = format_references(refs)
    return cells


def test_every_shipped_table_shows_the_papers_values_it_showed_before_the_catalogue(cfg):
    assert set(BEFORE) <= set(cfg["tables"]), "a table of the recording is gone"
    for name, before in BEFORE.items():
        now = reference_cells(cfg["tables"][name])
        expected = {key: CHANGED.get((name, key), text) for key, text in before.items()}
        assert {key: now.get(key) for key in expected} == expected, name
    assert all(key in BEFORE[name] for name, key in CHANGED)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key twice in one mapping (safe_load keeps the last silently)."""


def _unique_mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    twice = sorted({str(k) for k in keys if keys.count(k) > 1})
    if twice:
        raise yaml.constructor.ConstructorError(None, None, f"{', '.join(twice)} typed twice", node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def test_each_published_value_is_typed_once_in_config():
    """In config/papers/ only, each under one name of one paper, each method and ratio of a paper
    table once; a table of config/tables/ cites them and writes no value out."""
    papers = {path: yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
              for path in sorted((REPO / "config" / "papers").glob("*.yaml"))}
    names = [name for data in papers.values() for paper in data.values() for name in paper["tables"]]
    assert names and len(names) == len(set(names))
    for path in sorted((REPO / "config" / "tables").glob("*.yaml")):
        for name, table in yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader).items():
            written = [i for i, source in enumerate(reference_sources(table)) if "cite" not in source]
            assert not written, f"{path.name}: {name}.reference.{written[0]} writes values out; cite config/papers/"


# ------------------------------------------------------------------ citations, on tiny tables

CITED = paper_tables(
    {"paper": {"citation": "A. Author, A Paper", "tables": {
        "P T1": {"table": "Table 1 (tiny)", "dataset": "tiny2d",
                 "values": {"supervised": {25: {"dice": 80.0}, 50: {"dice": 85.0}},
                            "mean_teacher": {25: {"dice": 82.0, "asd": 1.5}}, "other": {25: {"dice": 70.0}}}},
        "P T2": {"table": "Table 2 (tiny, best)", "dataset": "tiny2d",
                 "values": {"mean_teacher": {25: {"dice": 83.0}}}},
        "P T9": {"table": "Table 9 (another dataset)", "dataset": "la", "values": {"supervised": {25: {"dice": 1.0}}}},
    }}}, {"paper": "papers/paper.yaml"})


def _table(reference) -> dict:
    return {"dataset": "tiny2d", "rows": [{"method": "supervised", "ratios": [25]},
                                          {"method": "mean_teacher", "ratios": [25]}], "reference": reference}


def test_a_citation_brings_the_cited_values_at_the_table_s_rows_with_its_source():
    one = _table({"cite": "P T1"})
    cite_references(one, "tiny.yaml: tiny", CITED)
    # one citation, not a list: untagged ("paper x"); only the rows' methods and ratios
    assert one["reference"] == {"source": "A. Author, A Paper, Table 1 (tiny)",
                                "values": {"supervised": {25: {"dice": 80.0}},
                                           "mean_teacher": {25: {"dice": 82.0, "asd": 1.5}}}}
    listed = _table([{"cite": "P T1", "methods": ["supervised"]}, {"cite": "P T2", "tag": "T2"}])
    cite_references(listed, "tiny.yaml: tiny", CITED)
    assert [(s["tag"], s["values"]) for s in listed["reference"]] == [
        ("P T1", {"supervised": {25: {"dice": 80.0}}}), ("T2", {"mean_teacher": {25: {"dice": 83.0}}})]
    written = _table({"source": "x", "values": {"supervised": {25: {"dice": 1.0}}}})
    cite_references(written, "tiny.yaml: tiny", CITED)
    assert written["reference"] == {"source": "x", "values": {"supervised": {25: {"dice": 1.0}}}}


def test_a_table_with_a_predictions_row_cites_its_papers_at_its_other_rows():
    """A predictions row (another tool's folder, not yet given its key when citations are read)
    takes no paper's values; before, the citation stopped the config with a KeyError."""
    table = _table({"cite": "P T1"})
    table["rows"].append({"predictions": "nnunet_preds", "label": "nnU-Net (labeled only)", "ratio": 25})
    cite_references(table, "tiny.yaml: tiny", CITED)
    assert table["reference"]["values"] == {"supervised": {25: {"dice": 80.0}},
                                            "mean_teacher": {25: {"dice": 82.0, "asd": 1.5}}}


@pytest.mark.parametrize("reference, message", [
    ([{"cite": "P T7"}],
     r"tiny\.yaml: tiny\.reference\.0\.cite: unknown paper table 'P T7'; allowed: P T1, P T2, P T9"),
    ({"cite": "P T9"}, r"tiny\.yaml: tiny\.reference\.cite: 'P T9' is a table of dataset 'la' \(papers/paper\.yaml\)"),
    ([{"cite": "P T1", "methods": ["cps"]}],
     r"tiny\.reference\.0\.methods\.0: 'P T1' \(papers/paper\.yaml\) has no values of 'cps'; allowed: supervised, "),
    ([{"cite": "P T1", "methods": ["other"]}], r"tiny\.reference\.0\.methods\.0: 'other' is no row of this table"),
], ids=["unknown-name", "other-dataset", "method-not-cited", "method-not-a-row"])
def test_a_wrong_citation_names_the_file_and_the_field(reference, message):
    table = _table(reference)
    with pytest.raises(ConfigError, match=message):
        cite_references(table, "tiny.yaml: tiny", CITED)


def test_a_citation_that_gives_no_value_at_the_rows_is_refused():
    table = {**_table({"cite": "P T1"}), "rows": [{"method": "cps", "ratios": [25]}]}
    with pytest.raises(ConfigError, match=r"tiny\.reference\.cite: 'P T1' \(papers/paper\.yaml\) gives no value "
                                          r"at this table's rows"):
        cite_references(table, "tiny.yaml: tiny", CITED)


def test_two_papers_may_not_name_a_table_alike():
    papers = {name: {"citation": name, "tables": {"X T1": {"table": "t", "dataset": "la", "values": {}}}}
              for name in ("one", "two")}
    with pytest.raises(ConfigError,
                       match=r"two\.yaml: two\.tables\.X T1: the name is also a table of one \(one\.yaml\)"):
        paper_tables(papers, {"one": "one.yaml", "two": "two.yaml"})


# ------------------------------------------------------------------ the shipped catalogue, edited

def _repo_copy(root, edit_tables=None, edit_papers=None):
    shutil.copytree(REPO / "workflow", root / "workflow")
    shutil.copytree(REPO / "config", root / "config")
    for folder, file, change in (("tables", "la.yaml", edit_tables), ("papers", "sgrs.yaml", edit_papers)):
        if change:
            data = yaml.safe_load((root / "config" / folder / file).read_text())
            change(data)
            write_yaml(root / "config" / folder / file, data)
    return root


def _drop_co_bionet(papers):
    """SGRS-Net T2 without Co-BioNet, which sgrs_la.yaml's Co-BioNet row (not run) shows."""
    del papers["sgrs"]["tables"]["SGRS-Net T2"]["values"]["co_bionet"]


def test_the_shipped_catalogue_refuses_a_missing_value_and_an_unknown_name_naming_the_file(tmp_path):
    root = _repo_copy(tmp_path / "a", edit_papers=_drop_co_bionet)
    with pytest.raises(ConfigError, match=r"sgrs_la\.yaml: sgrs_la\.rows\.7: 'co_bionet' is not implemented here, so the "
                                          r"row only shows paper values, but the sources in reference give none "
                                          r"for ratio\(s\) 5, 10"):
        load_config(root=root)
    root = _repo_copy(tmp_path / "b", edit_tables=lambda d: d["la"]["reference"][0].update(cite="BUARL T22"))
    with pytest.raises(ConfigError, match=r"tables/la\.yaml: la\.reference\.0\.cite: unknown paper table 'BUARL T22'"):
        load_config(root=root)
    root = _repo_copy(tmp_path / "c", edit_tables=lambda d: d["la"]["reference"][0].update(values={}))
    with pytest.raises(ConfigError, match=r"la\.yaml: invalid configuration\n  la\.reference\.0\.values: "
                                          r"unknown field; allowed: cite, methods, tag"):
        load_config(root=root)
