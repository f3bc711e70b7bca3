"""The audit as text, and the command line's body (``semiseg audit``, :mod:`semiseg.cli`)."""

from __future__ import annotations

import json

from semiseg.reporting.audit.chain import audit
from semiseg.reporting.audit.links import MISMATCH, MISSING, OK

__all__ = ["format_audit", "run_cli"]


def _mark(status: str) -> str:
    return "✓" if status == OK else "✗"


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _step_lines(step: dict, indent: str) -> list[str]:
    if not step["present"]:
        return [f"{indent}{step['stage']} record {step['record']}: MISSING"]
    code = step["code"]
    commit = (code.get("commit") or "?")[:10] + (" (uncommitted changes)" if code.get("dirty") else "")
    env = step.get("environment") or {}
    versions = ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "cuda", "numpy", "snakemake") if env.get(k))
    fp_state = "current" if code.get("fingerprint") == code.get("fingerprint_now") else f"now {code.get('fingerprint_now')}"
    job = ""
    if step.get("rule"):
        wildcards = ", ".join(f"{k}={v}" for k, v in (step.get("wildcards") or {}).items())
        job = f" (rule {step['rule']}{': ' + wildcards if wildcards else ''})"
    lines = [(f"{indent}{step['stage']} record {step['record']}{job}: {step.get('started')}, {step.get('wall_seconds')} s"
              f" on {step.get('host')} ({step.get('device')}), SLURM job {step.get('slurm_job_id') or '-'}"),
             f"{indent}  code {code.get('fingerprint')} ({fp_state}), commit {commit}; {versions}"]
    if step["stage"] == "train" and step.get("spec"):
        s = step["spec"]
        sched = s.get("schedule", {})
        lines.append(f"{indent}  spec: {s['method']['name']} ({s['method']['algorithm']}, {s['method']['network']}) "
                     f"params {json.dumps(s['method']['params'], sort_keys=True)}; schedule {sched.get('name')} "
                     f"{sched.get('iterations')} it; seed {s.get('seed')}; device {s.get('device')}")
    for st in step["stale"]:
        lines.append(f"{indent}  ⚠ {st['reason']}: {st['detail']}")
    return lines


def _link_lines(link: dict, indent: str, steps: dict, seen: set) -> list[str]:
    path = link["path"] + ("/" if link["kind"] == "dir" else "")
    checks = "  ".join(f"{c['role']} by {c['stage']} {_mark(c['status']) if c['status'] == OK else c['status']}"
                       for c in link["checks"])
    size = f" ({link['files']} files)" if link["kind"] == "dir" else ""
    lines = [f"{indent}{_mark(link['status'])} {link['name']:<11} {path}{size}  sha256 {_short(link['sha256'])}  "
             f"{checks}" + ("" if link["status"] == OK else f"  → {link['status']}")]
    for p in link["problems"]:
        lines.append(f"{indent}    ! {p}")
    if "manifest" in link:
        man = link["manifest"]
        lines.append(f"{indent}    manifest {man['path']}: {man.get('files', 0)} files, "
                     + ("all match" if man["status"] == OK else man["status"]))
    if "fingerprint" in link:
        fp = link["fingerprint"]
        state = "current" if fp["now"] and fp["now"] == fp["footnote"] else f"now {fp['now']}"
        lines.append(f"{indent}    footnote fingerprint {fp['footnote']} ({state})")
    key = link.get("made_by")
    if key and key not in seen:
        seen.add(key)
        lines += _step_lines(steps[key], indent + "    ")
    return lines


def format_audit(result: dict) -> str:
    """The audit as indented text: one line per link with ✓/✗, each record's details under it."""
    row = result["row"]
    name = row["method"] + (f" ({row['label']})" if row.get("label") else "")
    out = [f"audit {result['table']}: row {name}, ratio {result['ratio']}%"
           + (f", metric {result['metric']}" if result["metric"] else ""),
           f"workflow {result['root']}; staleness judged against {result['config']}"]
    if result.get("config_error"):
        out.append(f"  (config not loadable, config staleness unknown: {result['config_error'].splitlines()[0]})")
    cell = result["cell"]
    out.append("")
    if not cell["found"]:
        out.append(f"✗ cell: no row {cell['row_label']!r} with ratio {result['ratio']}% in the table text")
    for m in cell["metrics"].values():
        per_seed = ", ".join(f"{'one folder' if s == 'None' else f'seed {s}'}: "  # a predictions row: no seed
                             + (f"{v:.2f}" if isinstance(v, float) else "-") for s, v in m["per_seed"].items())
        out.append(f"{_mark(m['status'])} cell {m['column']}: table shows {m['shown']}, "
                   f"recomputed {m['recomputed']} ({per_seed})")
    out.append("")
    seen: set = set()
    steps = result["steps"]
    for link in result["chain"]:
        out += _link_lines(link, "", steps, seen)
    for run in result["runs"]:
        out.append(f"  seed {run['seed']}  {run['run_dir']}" if run["seed"] is not None
                   else f"  predictions row  {run['run_dir']} (scoring {run['predictions']}/, made outside the "
                        "workflow)")
        for link in run["links"]:
            out += _link_lines(link, "  ", steps, seen)
    out.append("  data (shared by the seeds)")
    for link in result["data"]:
        out += _link_lines(link, "  ", steps, seen)
    out.append("")
    c = result["counts"]
    out.append(f"status: {result['status']} ({c[OK]} links ok, {c[MISMATCH]} mismatched, {c[MISSING]} missing; "
               f"cell {cell['status']})")
    if result["stale"]:
        out.append("stale (the current code/config would rebuild these):")
        for st in result["stale"]:
            out.append(f"  {st['step']}: {st['reason']} ({st['detail']})")
    else:
        out.append("stale: none (code fingerprints and config match every record)")
    return "\n".join(out) + "\n"


def run_cli(args) -> int:
    """Print the audit; 0 when every link and the cell are ok, 1 otherwise."""
    result = audit(args.table, row=args.row, ratio=args.ratio, metric=args.metric, root=args.root,
                   overrides=getattr(args, "config", None) or (), configfiles=getattr(args, "configfile", None) or ())
    if args.format == "json":
        print(json.dumps(result, indent=1, default=str))
    else:
        print(format_audit(result), end="")
    return 0 if result["status"] == OK else 1
