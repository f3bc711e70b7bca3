"""`semiseg <stage> ...`: the one entry point every workflow rule calls.

Each subcommand is a thin shell over a function of the package; it reads the inputs the rule
declares, writes the outputs the rule declares (atomically), and exits non-zero with a message
naming the file and the problem when something is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("semiseg")


def _record(args, started, primary, inputs, outputs, spec, algorithm) -> None:
    """Write the stage's provenance record beside its outputs (see semiseg.provenance)."""
    from semiseg.fingerprint import code_fingerprint
    from semiseg.provenance import write_record

    plain = {k: v for k, v in vars(args).items()
             if k not in ("func", "spec", "verbose", "rule", "wildcards") and v is not None}
    write_record(args.command, primary_output=primary, inputs=inputs, outputs=outputs,
                 args=json.loads(json.dumps(plain, default=str)), started=started, spec=spec,
                 code=code_fingerprint(args.command, algorithm), rule=args.rule, wildcards=args.wildcards)


def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _write_json(obj, path: Path) -> None:
    from semiseg.io import atomic_write

    atomic_write(path, json.dumps(obj, indent=1))


# ----------------------------------------------------------------------------- stages
# Each returns what its provenance record needs: (primary output, inputs, outputs, spec, algorithm).
def cmd_check_config(args):
    from semiseg.config import load_config

    cfg = load_config(root=args.root)
    print(f"config OK: {len(cfg['datasets'])} datasets, {len(cfg['methods'])} methods, "
          f"{len(cfg['tables'])} tables, schedules {', '.join(cfg['schedules'])}")
    return None


def cmd_fetch(args):
    from semiseg.data.fetch import fetch

    rec = fetch(args.dataset, args.source, args.out, how_to_get=args.source.get("how_to_get", ""))
    log.info("fetched %s: %d files in %.1f s", args.dataset, len(rec["files"]), rec["seconds"])
    return args.out, [], [args.out], {"source": args.source}, None


def cmd_preprocess(args):
    from semiseg.data.preprocess import preprocess

    desc = preprocess(args.dataset, args.layout, Path(args.raw), labels=args.labels, dims=args.dims,
                      store_path=Path(args.store))
    _write_json(desc, args.descriptor)
    log.info("preprocessed %s: %d cases", args.dataset, len(desc["cases"]))
    return (Path(args.store), [Path(args.raw)], [Path(args.store), Path(args.descriptor)],
            {"layout": args.layout, "labels": args.labels, "dims": args.dims}, None)


def cmd_split(args):
    from semiseg.data.splits import make_split

    with open(args.descriptor) as fh:
        desc = json.load(fh)
    _write_json(make_split(desc, args.ratio, args.labeled_patients), args.out)
    return Path(args.out), [Path(args.descriptor)], [Path(args.out)], None, None


def cmd_train(args):
    from semiseg.engine.loop import train
    from semiseg.fingerprint import code_fingerprint

    algorithm = args.spec["method"]["algorithm"]
    code = args.code_fingerprint or code_fingerprint("train", algorithm)
    out = Path(args.out_dir)
    summary = train(args.spec, Path(args.store), Path(args.split), out, code_fingerprint=code,
                    progress=not args.no_progress, checkpoint_interval=args.checkpoint_interval)
    log.info("trained: %s", json.dumps(summary))
    return (out, [Path(args.store), Path(args.split)],
            [out / "model.pt", out / "models.pt", out / "train.csv", out / "config.json"], args.spec, algorithm)


def cmd_infer(args):
    from semiseg.inference.run import infer

    n = infer(Path(args.run_dir), Path(args.store), Path(args.split), Path(args.out), device=args.device)
    log.info("predicted %d cases into %s", n, args.out)
    run = Path(args.run_dir)
    with open(run / "config.json") as fh:
        spec = json.load(fh)["spec"]  # the run's resolved spec: what the predictions come from
    return (Path(args.out), [run / "model.pt", run / "config.json", Path(args.store), Path(args.split)],
            [Path(args.out)], spec, None)


def cmd_evaluate(args):
    from semiseg.metrics.evaluate import evaluate

    n = evaluate(Path(args.predictions), Path(args.store), Path(args.out), distance_unit=args.distance_unit)
    log.info("evaluated %d cases into %s", n, args.out)
    return Path(args.out), [Path(args.predictions), Path(args.store)], [Path(args.out)], None, None


def cmd_table(args):
    from semiseg.reporting.build import table_from_runs

    metrics = [Path(m) for m in args.metrics]
    table_from_runs(args.spec, descriptor=Path(args.descriptor), metrics=metrics, out=Path(args.out))
    log.info("wrote %s", args.out)
    return Path(args.out), [Path(args.descriptor), *metrics], [Path(args.out)], args.spec, None


def cmd_figure(args):
    import importlib

    from semiseg.method_sources import registered_figures

    fig, run = registered_figures()[args.name], Path(args.run_dir)
    module, _, function = fig["draw"].partition(":")
    draw = getattr(importlib.import_module(module), function)
    draw(run, Path(args.store), Path(args.split), Path(args.out), n_slices=args.slices)
    log.info("wrote %s", args.out)
    return (Path(args.out), [run / fig["weights"], run / "config.json", Path(args.store), Path(args.split)],
            [Path(args.out)], None, None)


def cmd_report(args):
    from semiseg.reporting.report import table_page

    runs = [Path(r) for r in args.runs]
    table_page(args.spec, table_md=Path(args.table), run_dirs=runs, store_path=Path(args.store),
               figures=[Path(p) for p in args.figures], out=Path(args.out))
    log.info("wrote %s", args.out)
    inputs = [Path(args.table), Path(args.store), *[Path(p) for p in args.figures]]
    inputs += [r / name for r in runs for name in ("metrics.csv", "config.json", "train.csv")]
    return Path(args.out), inputs, [Path(args.out)], args.spec, None


def cmd_export(args):
    from semiseg.inference.export import export_run

    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    done = export_run(Path(args.run_dir), Path(args.store), out, cases=args.cases,
                      source_dir=Path(args.source_dir) if args.source_dir else None)
    print(f"wrote image, ground truth and prediction of {len(done)} cases and labels.txt into {out}")
    return None  # a view of existing outputs, not a pipeline stage: no provenance record


def cmd_audit(args):
    from semiseg.reporting.audit import run_cli

    # Prints the chain; exit status 1 when a link is MISMATCH/missing or the cell differs from
    # the table (docs/provenance.md). Returns None: an audit writes no provenance record.
    code = run_cli(args)
    if code:
        raise SystemExit(code)
    return None


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from semiseg import __version__

    p = argparse.ArgumentParser(prog="semiseg", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"semiseg {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--rule", default=None, help="the workflow rule running this stage (for the provenance record)")
    p.add_argument("--wildcards", type=_json_arg, default=None,
                   help="that job's wildcards, as a JSON object (for the provenance record)")
    sub = p.add_subparsers(dest="command", required=True, metavar="<stage>")
    for add in (_data_commands, _run_commands, _output_commands):
        add(sub)
    return p


def _data_commands(sub) -> None:
    """check-config, and the stages that make a dataset's store and splits."""
    s = sub.add_parser("check-config", help="validate config/ against workflow/schemas/")
    s.add_argument("--root", type=Path, default=None, help="workflow root (default: found from cwd)")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("fetch", help="bring a dataset's source into results/raw/<dataset>")
    s.add_argument("--dataset", required=True, help="the dataset's name in config/datasets/ (named in messages)")
    s.add_argument("--source", type=_json_arg, required=True, help="the catalogue's source entry, as JSON")
    s.add_argument("--out", type=Path, required=True,
                   help="directory to fill with the source's files and their .fetched.json manifest")
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("preprocess", help="import a fetched layout into one h5 store + dataset.json")
    s.add_argument("--dataset", required=True, help="the dataset's name in config/datasets/ (stored in the store)")
    s.add_argument("--layout", required=True,
                   help="the source's on-disk layout (slices, la, acdc_raw, synthetic2d, synthetic3d)")
    s.add_argument("--raw", required=True, help="the fetched source directory, results/raw/<dataset>")
    s.add_argument("--labels", type=_json_arg, required=True,
                   help='class name -> integer label, as JSON, e.g. {"background": 0, "LV": 1}')
    s.add_argument("--dims", type=int, required=True, choices=(2, 3), help="2: slice-wise dataset, 3: volumetric")
    s.add_argument("--store", required=True, help="the h5 store to write")
    s.add_argument("--descriptor", required=True, help="the dataset.json to write beside it")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("split", help="write the labeled/unlabeled/val/test patients of one ratio")
    s.add_argument("--descriptor", required=True, help="the dataset's dataset.json")
    s.add_argument("--ratio", type=int, required=True, help="labeled percent, e.g. 10")
    s.add_argument("--labeled-patients", type=int, required=True, help="how many training patients are labeled")
    s.add_argument("--out", required=True, help="the split JSON to write, results/splits/<dataset>/<ratio>.json")
    s.set_defaults(func=cmd_split)


def _run_commands(sub) -> None:
    """The stages of one run: train, infer, evaluate."""
    s = sub.add_parser("train", help="train one run (method × dataset × ratio × seed)")
    s.add_argument("--spec", type=_json_arg, required=True, help="the resolved run spec, as JSON")
    s.add_argument("--store", required=True, help="the dataset's h5 store")
    s.add_argument("--split", required=True, help="the ratio's split JSON")
    s.add_argument("--out-dir", required=True, help="the run directory: model.pt, models.pt, train.csv, config.json")
    s.add_argument("--code-fingerprint", default="", help="hash of the code the run depends on")
    s.add_argument("--checkpoint-interval", type=int, default=None,
                   help="write the resumable state every N iterations (default: the spec's schedule, else 1000)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("infer", help="predict the test cases of a trained run")
    s.add_argument("--run-dir", required=True, help="holds model.pt and config.json")
    s.add_argument("--store", required=True, help="the dataset's h5 store")
    s.add_argument("--split", required=True, help="the run's split JSON (its test cases are predicted)")
    s.add_argument("--out", required=True, help="predictions directory")
    s.add_argument("--device", default=None, help="override the spec's device")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser("evaluate", help="score predictions against the store's labels")
    s.add_argument("--predictions", required=True, help="a run's predictions directory")
    s.add_argument("--store", required=True, help="the dataset's h5 store (the ground truth)")
    s.add_argument("--out", required=True, help="metrics.csv")
    s.add_argument("--distance-unit", default="voxel", choices=("voxel", "mm"),
                   help="95HD/ASD in voxels of the native grid (the papers' protocol) or in mm (the store's spacing)")
    s.set_defaults(func=cmd_evaluate)


def _output_commands(sub) -> None:
    """What is made from finished runs: tables, figures, report pages, exports, audits."""
    from semiseg.method_sources import registered_figures

    s = sub.add_parser("table", help="aggregate runs' metrics into a markdown table")
    s.add_argument("--spec", type=_json_arg, required=True, help="table spec + context, as JSON")
    s.add_argument("--descriptor", required=True, help="the dataset's dataset.json")
    s.add_argument("--metrics", nargs="+", required=True, help="runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv")
    s.add_argument("--out", required=True, help="the markdown table to write, results/tables/<name>.md")
    s.set_defaults(func=cmd_table)

    figures = registered_figures()
    s = sub.add_parser("figure", help="draw a figure a method registers from one of its trained runs")
    s.add_argument("name", choices=sorted(figures),
                   help="; ".join(f"{n}: {f['title']}, from a {f['algorithm']} run" for n, f in sorted(figures.items())))
    s.add_argument("--run-dir", required=True, help="a finished run: config.json and the weights the figure reads "
                   "(" + "; ".join(f"{n}: {f['weights']}" for n, f in sorted(figures.items())) + ")")
    s.add_argument("--store", required=True, help="the dataset's h5 store")
    s.add_argument("--split", required=True, help="the run's split; slices come from its unlabeled cases")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.add_argument("--slices", type=int, default=4, help="how many unlabeled slices (rows)")
    s.set_defaults(func=cmd_figure)

    s = sub.add_parser("report", help="the report page of a table: the table as HTML, per-class metrics, "
                                      "Dice against ratio, learning curves, overlays, the methods' figures")
    s.add_argument("--spec", type=_json_arg, required=True, help="name and catalogue entry of the table, as JSON")
    s.add_argument("--table", required=True, help="the built table, results/tables/<name>.md")
    s.add_argument("--store", required=True, help="the dataset's store.h5 (images and labels of the overlays)")
    s.add_argument("--runs", nargs="*", default=[], help="the table's run directories")
    s.add_argument("--figures", nargs="*", default=[], help="figures registered by the table's methods (PNG) to include")
    s.add_argument("--out", required=True, help="the HTML page to write")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("export", help="write a run's predictions beside their images and ground truth, "
                                      "placed in patient space, with an ITK-SNAP label file")
    s.add_argument("--run-dir", required=True,
                   help="a run with predictions/ (runs/<dataset>/<method>/<ratio>/seed<seed>)")
    s.add_argument("--store", required=True, help="the dataset's store.h5")
    s.add_argument("--out", default=None, help="the folder to write (default: <run-dir>/export)")
    s.add_argument("--cases", nargs="+", default=None, help="only these case ids (default: every prediction)")
    s.add_argument("--source-dir", default=None,
                   help="the fetched release (results/raw/<dataset>) of a cropping or resampling reader: also "
                        "write <case>_pred_source.nii.gz on the grid of its label file")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("audit", help="trace a table cell back to the fetched source; check every checksum")
    s.add_argument("table", help="a built table, results/tables/<name>.md")
    s.add_argument("--row", required=True, help="the row's method name or its label")
    s.add_argument("--ratio", type=int, required=True, help="labeled percent, e.g. 10")
    s.add_argument("--metric", default=None, choices=("dice", "jaccard", "hd95", "asd"),
                   help="recompute this column of the cell (default: all four)")
    s.add_argument("--format", default="text", choices=("text", "json"), help="indented text (default) or JSON")
    s.add_argument("--root", default=None, help="workflow directory (default: found from the table's location)")
    s.set_defaults(func=cmd_audit)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    from semiseg.config import ConfigError
    from semiseg.errors import DataError

    if args.command in ("train", "infer", "evaluate"):
        from semiseg.allocator import tune_allocator

        tune_allocator()  # large 3D activations: keep freed memory in the heap (semiseg.allocator)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    started = time.time()
    try:
        made = args.func(args)
        if made is not None:
            _record(args, started, *made)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"semiseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - named errors from the engine
        from semiseg.device import ResourceError
        from semiseg.engine.loop import TrainingError
        from semiseg.engine.runlock import RunFolderBusy
        from semiseg.io import NoSpaceError, is_no_space

        if isinstance(exc, (TrainingError, ResourceError, RunFolderBusy, NoSpaceError)) or is_no_space(exc):
            what = exc if not is_no_space(exc) else f"no space left on the device ({exc})"
            print(f"semiseg {args.command}: error: {what}", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
