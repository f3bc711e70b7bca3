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
             if k not in ("func", "spec", "verbose", "rule", "wildcards", "log") and v is not None}
    write_record(args.command, primary_output=primary, inputs=inputs, outputs=outputs,
                 args=json.loads(json.dumps(plain, default=str)), started=started, spec=spec,
                 code=code_fingerprint(args.command, algorithm), rule=args.rule, wildcards=args.wildcards)


class LogBusy(RuntimeError):
    """Another process writes this job's log: an earlier attempt of the job still runs."""


def _open_log(path: Path):
    """Send this process's stderr (its log messages, warnings, tracebacks) to the job's log `path`,
    and return a stream to the stderr it had (Snakemake's console), for the errors.

    The log is locked (``flock``) for as long as the process runs and emptied only once the lock is
    held: a second attempt of a job whose first still runs (a training left running when
    Snakemake was killed with -9) is refused before it touches the log the first one writes.

    Raises:
        LogBusy: another process holds the log.
    """
    import fcntl
    import os
    import stat

    from semiseg.io import file_mode

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogBusy(f"{path}: another process writes this job's log (an earlier attempt of the job that still "
                      "runs, e.g. a training left running when Snakemake was killed); not starting a second one, "
                      "and that log is left as it is. Wait for it to end, or stop it, and run again") from None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.ftruncate(fd, 0)
    console = os.fdopen(os.dup(2), "w", buffering=1)
    sys.stderr.flush()
    os.dup2(fd, 2)  # the lock belongs to the open file, which fd 2 now shares: it lasts as long as the process
    os.close(fd)
    return console


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
                      store_path=Path(args.store), params=args.params)
    _write_json(desc, args.descriptor)
    log.info("preprocessed %s: %d cases", args.dataset, len(desc["cases"]))
    return (Path(args.store), [Path(args.raw)], [Path(args.store), Path(args.descriptor)],
            {"layout": args.layout, "labels": args.labels, "dims": args.dims, "params": args.params}, None)


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


def cmd_evaluate_external(args):
    from semiseg.metrics.external import evaluate_external

    made = evaluate_external(Path(args.predictions), Path(args.store), Path(args.split), Path(args.out),
                             distance_unit=args.distance_unit)
    log.info("evaluated %d cases of %s (sha256 %s) into %s", made["cases"], made["folder"], made["sha256"], args.out)
    return (Path(args.out), [Path(args.predictions), Path(args.store), Path(args.split)], [Path(args.out)],
            {"predictions": made}, None)


def cmd_oracle_train(args):
    from semiseg.engine.oracle import oracle_train
    from semiseg.fingerprint import code_fingerprint

    algorithm = args.spec["method"]["algorithm"]
    code = args.code_fingerprint or code_fingerprint("oracle-train", algorithm)
    out = Path(args.out_dir)
    summary = oracle_train(args.spec, Path(args.store), Path(args.split), out, every=args.every,
                           code_fingerprint=code, progress=not args.no_progress,
                           checkpoint_interval=args.checkpoint_interval)
    log.info("replayed with snapshots: %s", json.dumps(summary))
    return (out, [Path(args.store), Path(args.split)], [out / "snapshots", out / "train.csv", out / "config.json"],
            args.spec, algorithm)


def cmd_oracle_evaluate(args):
    from semiseg.metrics.oracle import oracle_evaluate

    summary = oracle_evaluate(Path(args.snapshots), Path(args.store), Path(args.split), Path(args.out),
                              Path(args.summary), distance_unit=args.distance_unit, device=args.device)
    log.info("scored %d snapshots on the test set; best at iteration %d (dice %.4f)", len(summary["snapshots"]),
             summary["best_iteration"], summary["best"]["dice"])
    return (Path(args.summary), [Path(args.snapshots), Path(args.store), Path(args.split)],
            [Path(args.out), Path(args.summary)], None, None)


def cmd_table(args):
    from semiseg.reporting.build import table_from_runs

    metrics = [Path(m) for m in args.metrics]
    oracle = [Path(m) for m in args.oracle]
    table_from_runs(args.spec, descriptor=Path(args.descriptor), metrics=metrics, oracle=oracle, out=Path(args.out))
    log.info("wrote %s", args.out)
    return Path(args.out), [Path(args.descriptor), *metrics, *oracle], [Path(args.out)], args.spec, None


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
    external = [Path(m) for m in args.external]
    table_page(args.spec, table_md=Path(args.table), run_dirs=runs, store_path=Path(args.store), external=external,
               figures=[Path(p) for p in args.figures], out=Path(args.out))
    log.info("wrote %s", args.out)
    inputs = [Path(args.table), Path(args.store), *[Path(p) for p in args.figures], *external]
    inputs += [r / name for r in runs for name in ("metrics.csv", "config.json", "train.csv")]
    return Path(args.out), inputs, [Path(args.out)], args.spec, None


def cmd_export(args):
    if args.format == "nnunet":
        return _export_nnunet(args)
    from semiseg.inference.export import export_run

    if not (args.run_dir and args.store):
        raise ValueError("export --format view needs --run-dir and --store")

    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    done = export_run(Path(args.run_dir), Path(args.store), out, cases=args.cases,
                      source_dir=Path(args.source_dir) if args.source_dir else None)
    print(f"wrote image, ground truth and prediction of {len(done)} cases and labels.txt into {out}")
    return None  # a view of existing outputs, not a pipeline stage: no provenance record


def _export_nnunet(args):
    from semiseg import paths
    from semiseg.inference.export import export_nnunet

    if not (args.dataset and args.ratio):
        raise ValueError("export --format nnunet needs the dataset and the ratio: semiseg export --format nnunet "
                         "<dataset> <ratio>")
    results = Path(args.results)
    out = (Path(args.out) if args.out
           else results / "nnunet_raw" / f"Dataset{args.dataset_id:03d}_{args.dataset}_{args.ratio}pct")
    roles = export_nnunet(results / paths.store(args.dataset), results / paths.split(args.dataset, args.ratio), out)
    print(f"wrote {len(roles['labeled'])} labeled, {len(roles['val'])} val and {len(roles['test'])} test cases "
          f"as an nnU-Net raw dataset into {out}")
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
    p.add_argument("--log", type=Path, default=None,
                   help="the job's log: stderr goes there, once no earlier attempt of the job still writes it; "
                        "an error also goes to the console")
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
    s.add_argument("--params", type=_json_arg, default=None,
                   help="the source's params, as JSON: the reader's options for a layout that takes them (nnunet)")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("split", help="write the labeled/unlabeled/val/test patients of one ratio")
    s.add_argument("--descriptor", required=True, help="the dataset's dataset.json")
    s.add_argument("--ratio", type=int, required=True, help="labeled percent, e.g. 10")
    s.add_argument("--labeled-patients", type=int, required=True, help="how many training patients are labeled")
    s.add_argument("--out", required=True, help="the split JSON to write, results/splits/<dataset>/<ratio>.json")
    s.set_defaults(func=cmd_split)


def _training_args(s, out_dir: str) -> None:
    """What a training (a run's, or the oracle's replay of it) is given; `out_dir` says what its
    folder holds."""
    s.add_argument("--spec", type=_json_arg, required=True, help="the resolved run spec, as JSON")
    s.add_argument("--store", required=True, help="the dataset's h5 store")
    s.add_argument("--split", required=True, help="the ratio's split JSON")
    s.add_argument("--out-dir", required=True, help=out_dir)
    s.add_argument("--code-fingerprint", default="", help="hash of the code the training depends on")
    s.add_argument("--checkpoint-interval", type=int, default=None,
                   help="write the resumable state every N iterations (default: the spec's schedule, else 1000)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def _run_commands(sub) -> None:
    """The stages of one run: train, infer, evaluate."""
    s = sub.add_parser("train", help="train one run (method × dataset × ratio × seed)")
    _training_args(s, "the run directory: model.pt, models.pt, train.csv, config.json")
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
    _scoring_args(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("evaluate-external", help="score another tool's predictions of a split's test cases "
                                                 "(<case>.nii.gz each, on the case's grid) as a run is scored")
    s.add_argument("--predictions", required=True, help="the folder of <case>.nii.gz label maps")
    s.add_argument("--split", required=True, help="the split whose test cases the folder must predict, exactly")
    _scoring_args(s)
    s.set_defaults(func=cmd_evaluate_external)

    s = sub.add_parser("oracle-train", help="train a run again, keeping a snapshot every N iterations, for a table's "
                                            "test-selection oracle (never the run's own files)")
    s.add_argument("--every", type=int, required=True, help="keep a snapshot every N iterations (and the last)")
    _training_args(s, "the oracle's folder: snapshots/, train.csv, config.json")
    s.set_defaults(func=cmd_oracle_train)

    s = sub.add_parser("oracle-evaluate", help="predict and score the test cases with every snapshot of an "
                                               "oracle-train folder; name the best (selected on the test set)")
    s.add_argument("--snapshots", required=True, help="the oracle's snapshots/ folder")
    s.add_argument("--split", required=True, help="the run's split JSON (its test cases are predicted)")
    s.add_argument("--store", required=True, help="the dataset's h5 store (images and ground truth)")
    s.add_argument("--out", required=True, help="the folder of each snapshot's predictions/ and metrics.csv")
    s.add_argument("--summary", required=True, help="oracle.json: every snapshot's scores and the best")
    s.add_argument("--distance-unit", default="voxel", choices=("voxel", "mm"),
                   help="95HD/ASD in voxels of the native grid (the papers' protocol) or in mm (the store's spacing)")
    s.add_argument("--device", default=None, help="override the spec's device")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    s.set_defaults(func=cmd_oracle_evaluate)


def _scoring_args(s) -> None:
    """What scoring predictions needs besides them: the ground truth, the output, the distance unit."""
    s.add_argument("--store", required=True, help="the dataset's h5 store (the ground truth)")
    s.add_argument("--out", required=True, help="metrics.csv")
    s.add_argument("--distance-unit", default="voxel", choices=("voxel", "mm"),
                   help="95HD/ASD in voxels of the native grid (the papers' protocol) or in mm (the store's spacing)")


def _output_commands(sub) -> None:
    """What is made from finished runs: tables, figures, report pages, exports, audits."""
    from semiseg.method_sources import registered_figures

    s = sub.add_parser("table", help="aggregate runs' metrics into a markdown table")
    s.add_argument("--spec", type=_json_arg, required=True, help="table spec + context, as JSON")
    s.add_argument("--descriptor", required=True, help="the dataset's dataset.json")
    s.add_argument("--metrics", nargs="+", required=True,
                   help="runs/<dataset>/<method>/<ratio>/seed<seed>/metrics.csv, and "
                        "external/<table>/<key>/metrics.csv of the table's predictions rows")
    s.add_argument("--oracle", nargs="*", default=[],
                   help="oracle/every<k>/<dataset>/<method>/<ratio>/seed<seed>/oracle.json of the table's runs, for "
                        "a table with `oracle:` (its best-on-test column)")
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
    s.add_argument("--external", nargs="*", default=[],
                   help="external/<table>/<key>/metrics.csv of the table's predictions rows (evaluation only)")
    s.add_argument("--figures", nargs="*", default=[], help="figures registered by the table's methods (PNG) to include")
    s.add_argument("--out", required=True, help="the HTML page to write")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("export", help="write a run's predictions beside their images and ground truth, "
                                      "placed in patient space, with an ITK-SNAP label file; or (--format "
                                      "nnunet) a dataset's split as an nnU-Net raw dataset")
    s.add_argument("--format", choices=("view", "nnunet"), default="view",
                   help="view (default): a run's predictions for a viewer; nnunet: the split <dataset> <ratio>")
    s.add_argument("dataset", nargs="?", default=None, help="--format nnunet: the dataset")
    s.add_argument("ratio", nargs="?", type=int, default=None, help="--format nnunet: the labeled percent")
    s.add_argument("--results", default="results",
                   help="--format nnunet: the results directory holding the store and the split (default: results)")
    s.add_argument("--dataset-id", type=int, default=500,
                   help="--format nnunet: the nnU-Net dataset number in the default folder name (default: 500)")
    s.add_argument("--run-dir", default=None,
                   help="a run with predictions/ (runs/<dataset>/<method>/<ratio>/seed<seed>)")
    s.add_argument("--store", default=None, help="the dataset's store.h5")
    s.add_argument("--out", default=None, help="the folder to write (default: <run-dir>/export; --format nnunet: "
                                               "<results>/nnunet_raw/Dataset<id>_<dataset>_<ratio>pct)")
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
    s.add_argument("--config", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="the build's `snakemake --config` overrides (e.g. schedule=smoke seeds=[0]): staleness is "
                        "judged against the config the build ran with")
    s.add_argument("--configfile", nargs="+", action="extend", default=[], metavar="FILE",
                   help="the build's `snakemake --configfile` files, merged over config/config.yaml")
    s.set_defaults(func=cmd_audit)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = None
    if args.log is not None:
        try:
            console = _open_log(args.log)
        except LogBusy as exc:
            print(f"semiseg {args.command}: error: {exc}", file=sys.stderr)
            return 3

    def error(text: str) -> None:
        """An error line for the log and, with --log, for the console too (the log may be on a
        full disk, and Snakemake's own message only says to read it)."""
        for stream in (sys.stderr, console):
            if stream is not None:
                try:
                    print(text, file=stream, flush=True)
                except OSError:
                    pass

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    from semiseg.config import ConfigError
    from semiseg.errors import DataError

    if args.command in ("train", "infer", "evaluate", "oracle-train", "oracle-evaluate"):
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
        error(f"semiseg {args.command}: error: {exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - named errors from the engine
        from semiseg.device import ResourceError
        from semiseg.engine.loop import TrainingError
        from semiseg.engine.runlock import RunFolderBusy
        from semiseg.io import NoSpaceError, is_no_space

        if isinstance(exc, (TrainingError, ResourceError, RunFolderBusy, NoSpaceError)) or is_no_space(exc):
            what = exc if not is_no_space(exc) else f"no space left on the device ({exc})"
            error(f"semiseg {args.command}: error: {what}")
            return 3
        if console is not None:
            error(f"semiseg {args.command}: error: {type(exc).__name__}: {exc} (the traceback is in {args.log})")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
