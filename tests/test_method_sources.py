"""What the methods' source says without being imported: which files may register a method, and
the figures each method registers (semiseg.method_sources), as the CLI, the rules, the code
fingerprint and the report page find them."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, make_workflow, tiny_table
from semiseg.fingerprint import PACKAGE, registered_algorithms, stage_files
from semiseg.method_sources import _figures_of, figure_of, method_source_files, registered_figures
from semiseg.paths import figure, run_dir, split, store


def test_a_method_with_helpers_is_one_package():
    files = {f.relative_to(PACKAGE).as_posix() for f in method_source_files()}
    assert "methods/crln/__init__.py" in files and "methods/alhvr.py" in files
    assert not {"methods/crln/net.py", "methods/crln/rectify.py", "methods/crln/views.py"} & files
    assert not (PACKAGE / "methods" / "crln_net.py").exists()
    assert registered_algorithms()["crln"] == "semiseg.methods.crln"


def test_the_registered_figures_name_their_run_weights_and_drawing_function():
    figures = registered_figures()
    assert set(figures) == {"alhvr_regions", "buarl_entropy"}
    assert (figures["alhvr_regions"]["algorithm"], figures["alhvr_regions"]["weights"]) == ("alhvr", "models.pt")
    assert (figures["buarl_entropy"]["algorithm"], figures["buarl_entropy"]["weights"]) == ("buarl_bcp", "model.pt")
    for fig in figures.values():
        assert fig["algorithm"] in registered_algorithms()
        module, _, function = fig["draw"].partition(":")
        assert callable(getattr(importlib.import_module(module), function))
    # the figure stage's code is the drawing modules' import closure, found through the registry
    files = {f.relative_to(PACKAGE).as_posix() for f in stage_files("figure")}
    assert {"reporting/figures.py", "reporting/buarl_figure.py", "methods/buarl.py"} <= files


def test_a_figure_file_names_its_registration():
    assert figure("buarl_entropy", "acdc", 10) == "figures/buarl_entropy_acdc_10.png"
    assert figure_of("results/figures/alhvr_regions_synthetic2d_10.png")["name"] == "alhvr_regions"
    with pytest.raises(ValueError, match=r"regions_acdc_10.png: not a registered figure"):
        figure_of("results/figures/regions_acdc_10.png")


def test_a_malformed_registration_names_its_file(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('FIGURES = [{"name": "x", "algorithm": "y"}]\n')
    with pytest.raises(ValueError, match=r"bad.py: a FIGURES entry has keys \['algorithm', 'name'\]"):
        _figures_of(bad)
    bad.write_text("FIGURES = [dict(name='x')]\n")
    with pytest.raises(ValueError, match="bad.py: FIGURES must be a literal"):
        _figures_of(bad)


def test_no_rule_command_or_report_module_names_a_method():
    from semiseg.cli import build_parser

    texts = {p: p.read_text() for p in [*(REPO / "workflow" / "rules").glob("*.smk"), REPO / "workflow" / "Snakefile",
                                        PACKAGE / "cli.py", PACKAGE / "reporting" / "report.py"]}
    for algorithm in registered_algorithms():
        word = re.compile(rf"(?<![\w-]){algorithm}(?![\w-])", re.IGNORECASE)
        named = [p.name for p, t in texts.items() if word.search(t)]
        assert not named, f"{algorithm} named in {named}"
    # `semiseg figure <name>` takes exactly the registered figures
    args = ["--run-dir", "r", "--store", "s", "--split", "p", "--out", "o.png"]
    for name in registered_figures():
        assert build_parser().parse_args(["figure", name, *args]).name == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["figure", "regions", *args])


def test_each_figure_rule_draws_its_own_figure(tmp_path):
    # One rule per registered figure is made in a loop. Each job must draw its own figure, not the
    # loop's last one: a shell command is formatted again when its job runs, after the loop has moved
    # on (a dry run's printed command is formatted earlier and shows the right one either way). The
    # jobs run here for real, with a `semiseg` on PATH that only writes its arguments to --out.
    root = make_workflow(tmp_path / "wf", tables=tiny_table(methods=("alhvr", "buarl_bcp")))
    figures = registered_figures()
    for fig in figures.values():
        run = root / "results" / run_dir("tiny2d", fig["algorithm"], 25, 0)
        run.mkdir(parents=True)
        (run / fig["weights"]).write_text("")
        (run / "config.json").write_text("{}")
    for path in (store("tiny2d"), split("tiny2d", 25)):
        (root / "results" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "results" / path).write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "semiseg").write_text('#!/bin/sh\nfor a; do [ "$prev" = --out ] && out=$a; prev=$a; done\n'
                                     'echo "$@" > "$out"\n')
    (bin_dir / "semiseg").chmod(0o755)
    targets = {name: f"results/{figure(name, 'tiny2d', 25)}" for name in figures}
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", *targets.values(), "--cores", "1",
                           "--rerun-triggers", "mtime", "--allowed-rules", *(f["rule"] for f in figures.values())],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name, fig in figures.items():
        command = (root / targets[name]).read_text()
        assert f"--rule {fig['rule']} " in command and f" figure {name} " in command, command
