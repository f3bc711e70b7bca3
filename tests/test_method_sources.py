"""What the methods' source says without being imported: which files may register a method, and
the figures each method registers (semiseg.method_sources), as the CLI, the rules, the code
fingerprint and the report page find them."""

from __future__ import annotations

import importlib
import re

import pytest

from conftest import REPO, make_workflow, snakemake, tiny_table
from semiseg.fingerprint import PACKAGE, registered_algorithms, stage_files
from semiseg.method_sources import _figures_of, figure_of, method_source_files, registered_figures
from semiseg.paths import figure


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
    # one rule per registered figure is made in a loop; each job's command must name that rule's
    # figure, not the loop's last one (a shell command is formatted only when its job runs)
    root = make_workflow(tmp_path / "wf", tables=tiny_table(methods=("alhvr", "buarl_bcp")))
    targets = {name: f"results/{figure(name, 'tiny2d', 25)}" for name in registered_figures()}
    proc = snakemake(root, "-n", "-p", "--forceall", *targets.values())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    commands = [line for line in (proc.stdout + proc.stderr).splitlines() if " figure " in line]
    assert len(commands) == len(targets)
    for name, fig in registered_figures().items():
        (command,) = [c for c in commands if f"--out {targets[name]}" in c]
        assert f"--rule {fig['rule']} " in command and f" figure {name} " in command, command
