"""The fetch stage: bring a dataset's source layout into ``results/raw/<dataset>/``.

Sources, by the catalogue's ``source`` entry (or ``config.sources.<dataset>``):

- ``layout: synthetic2d | synthetic3d``: generated here, deterministically from ``seed``;
- ``path: <dir>``: a local copy of the layout (hard links where the filesystem allows, else a
  copy), so the workflow never reads outside ``results/`` after this stage;

Every fetch ends by writing ``.fetched.json``: the source, and the sha256 and size of every
file. It is written last, so a fetch that failed half-way leaves no manifest and the stage's
output is never mistaken for a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from semiseg.data.errors import DataError
from semiseg.data.store import sha256_file
from semiseg.data.synthetic import write_synthetic2d, write_synthetic3d

__all__ = ["fetch", "manifest", "MANIFEST"]

MANIFEST = ".fetched.json"
GENERATORS = {"synthetic2d": write_synthetic2d, "synthetic3d": write_synthetic3d}


def manifest(root: Path) -> dict[str, dict]:
    """sha256 and size of every file below `root` (the manifest itself excluded), sorted by path."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".partial"):
            out[str(p.relative_to(root))] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def fetch(dataset: str, source: dict, out_dir: Path, *, how_to_get: str = "") -> dict:
    """Fetch `dataset` from `source` into `out_dir`; returns the manifest written beside it."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    layout = source["layout"]
    t0 = time.time()
    if layout in GENERATORS:
        GENERATORS[layout](tmp, seed=int(source.get("seed", 0)), **source.get("params", {}))
        origin = {"generator": layout, "seed": int(source.get("seed", 0)), "params": source.get("params", {})}
    elif "path" in source:
        src = Path(source["path"]).expanduser()
        if not src.is_dir():
            raise DataError(src, f"the {dataset} source directory does not exist. {how_to_get}".strip())
        shutil.copytree(src, tmp, copy_function=_link_or_copy)
        origin = {"path": str(src.resolve())}
    else:
        raise DataError(out_dir, f"no way to fetch {dataset!r}: its source names neither a generator nor a "
                                 f"local path. {how_to_get}".strip())
    files = manifest(tmp)
    if not files:
        shutil.rmtree(tmp)
        raise DataError(source.get("path", out_dir), f"the {dataset} source holds no files. {how_to_get}".strip())
    record = {"dataset": dataset, "layout": layout, "source": origin, "files": files,
              "seconds": round(time.time() - t0, 2)}
    with open(tmp / MANIFEST, "w") as fh:
        json.dump(record, fh, indent=1)
    os.replace(tmp, out_dir)
    return record
