"""The fetch stage: bring a dataset's source layout into ``results/raw/<dataset>/``.

Sources, by the catalogue's ``source`` entry (or ``config.sources.<dataset>``), exactly one of:

- ``layout: synthetic2d | synthetic3d``: generated here, deterministically from ``seed``;
- ``path: <dir or archive>``: a local copy of the layout, either unpacked (copied in, see below)
  or a ``.zip`` / ``.tar.gz`` archive (unpacked by :mod:`semiseg.data.archives`; checked against
  ``sha256`` first when one is given). A relative path is taken relative to ``root``, the
  workflow directory, so ``path: ../shared/data/ACDC`` means the same wherever Snakemake runs
  from;
- ``url: <http(s) URL of an archive>`` + ``sha256``: downloaded (:mod:`semiseg.data.download`:
  resumable, verified, with progress) into ``results/raw/.downloads/<dataset>/``, unpacked.

After this stage the workflow reads nothing outside ``results/``, and nothing this stage does
writes into a source: a local folder is *copied* (new files, never hard links, so no later write
into ``results/`` can reach the user's files), and only read. Inside a local folder, a symbolic
link is followed when it points to a file or folder inside the same source (its target's bytes
are copied); a link that leaves the source, a dangling link, a link loop or a special file (a
device, a socket, a pipe) stops the fetch with a message naming the link.

Archives are unpacked with path checks (no absolute paths, no ``..``, no links out of the tree);
an archive whose content sits in one top-level folder (``database/`` in the official ACDC zip)
is unwrapped by one level. Layouts that carry no split lists of their own (``acdc_raw``,
``la_raw``) get the protocol's lists shipped in ``config/`` (their registry entry's ``shipped_splits``), copied in so
the manifest checksums them with the data; a source with some but not all of its lists is
refused (which of its lists would count is not for the fetch to guess). The LA copy (``la``)
usually carries UA-MT's lists: they are kept, but each must be the shipped list or a first part
of it (a trimmed copy, such as a test subset, keeps the protocol's order, so its first n train
cases are still the labeled ones); a copy without lists gets the shipped ones.

Every fetch ends by writing ``.fetched.json``: the source, and the sha256 and size of every
file. It is written last, and the output directory appears (by a rename) only after it, so a
fetch that failed half-way leaves no output and is never mistaken for a complete one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path

from semiseg.data.archives import extract, unwrap
from semiseg.data.download import DownloadError, by_hand, download, filename_for
from semiseg.errors import DataError
from semiseg.data.registry import LAYOUTS, shipped_splits_digest
from semiseg.data.synthetic import write_synthetic2d, write_synthetic3d
from semiseg.io import atomic_dir, read_text, sha256_file

__all__ = ["DOWNLOADS", "DownloadError", "MANIFEST", "copy_source_tree", "download", "extract", "fetch", "manifest",
           "shipped_splits_digest"]

MANIFEST = ".fetched.json"
#: Folder beside the fetched datasets that holds downloads (partial and verified).
DOWNLOADS = ".downloads"
#: The generated layouts' writers (the layouts marked ``generated`` in semiseg.data.registry).
GENERATORS = {"synthetic2d": write_synthetic2d, "synthetic3d": write_synthetic3d}

_PARTIAL = ".partial"


def manifest(root: Path) -> dict[str, dict]:
    """sha256 and size of every file below `root` (the manifest itself excluded), sorted by path."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(_PARTIAL):
            out[str(p.relative_to(root))] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


# ----------------------------------------------------------------------------- local folders
def _plan_copy(src: Path) -> tuple[list[tuple[Path, Path]], list[Path], int]:
    """What copying `src` takes: (file to read, path relative to the copy) pairs, the folders to
    create, and the bytes. Every link is checked here, before anything is copied."""
    root = src.resolve()
    files: list[tuple[Path, Path]] = []
    folders: list[Path] = []
    total = 0

    def target_of(link: Path) -> Path:
        try:
            real = link.resolve(strict=True)
        except FileNotFoundError:
            raise DataError(link, f"symbolic link to {os.readlink(link)!r}, which does not exist (a dangling "
                                  f"link); remove it from the source or restore its target") from None
        except (RuntimeError, OSError) as exc:  # a loop: RuntimeError up to 3.12, OSError ELOOP after
            if isinstance(exc, OSError) and exc.errno not in (errno.ELOOP, None):
                raise
            raise DataError(link, f"symbolic link loop (through {os.readlink(link)!r}); remove it from "
                                  f"the source") from None
        if real != root and root not in real.parents:
            raise DataError(link, f"symbolic link to {real}, outside the source {root}; links are only "
                                  f"followed inside the source (copy the file into it instead)")
        return real

    def walk(real_dir: Path, shown_dir: Path, rel: Path, above: tuple[Path, ...]) -> None:
        nonlocal total
        with os.scandir(real_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            shown = shown_dir / entry.name
            real = target_of(shown) if entry.is_symlink() else Path(entry.path)
            mode = real.stat().st_mode
            if stat.S_ISDIR(mode):
                if real in above:
                    raise DataError(shown, f"symbolic link loop: it leads back to {real}, a folder that "
                                           f"contains it; remove it from the source")
                folders.append(rel / entry.name)
                walk(real, shown, rel / entry.name, (*above, real))
            elif stat.S_ISREG(mode):
                files.append((real, rel / entry.name))
                total += real.stat().st_size
            else:
                raise DataError(shown, "not a regular file or folder (a device, socket or pipe); "
                                       "a source holds files and folders only")

    walk(root, src, Path("."), (root,))
    return files, folders, total


def copy_source_tree(src: Path, dst: Path) -> int:
    """Copy the files of the folder `src` into the existing folder `dst`; return the bytes copied.

    New files with the umask's mode (never hard links: nothing written to `dst` later can change
    `src`), symbolic links followed inside `src` only (see the module docstring). `src` is only
    read.
    """
    files, folders, total = _plan_copy(Path(src))
    dst = Path(dst)
    for rel in folders:
        (dst / rel).mkdir(exist_ok=True)
    for real, rel in files:
        shutil.copyfile(real, dst / rel)
    return total


def _tree_bytes(src: Path) -> int:
    return _plan_copy(src)[2] if src.is_dir() else src.stat().st_size


# ----------------------------------------------------------------------------- split lists
def _default_root() -> Path:
    """The workflow directory: the checkout around the current directory, else the directory itself."""
    from semiseg.schema import ConfigError, find_root

    try:
        return find_root()
    except ConfigError:
        return Path.cwd()


def _resolve(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p


def _list_lines(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def _check_prefix(own: Path, shipped: Path, layout: str) -> None:
    """Raise unless the source's list `own` is the shipped list or its first part."""
    mine, protocol = _list_lines(own), _list_lines(shipped)
    for number, (a, b) in enumerate(zip(mine, protocol), start=1):
        if a != b:
            raise DataError(own, f"line {number} is {a!r} where the protocol's {shipped} has {b!r}: the "
                                 f"{layout} source's lists must be the protocol's or a first part of them "
                                 f"(delete the source's lists to use the shipped ones)")
    if len(mine) > len(protocol):
        raise DataError(own, f"{len(mine)} cases, more than the protocol's {len(protocol)} in {shipped}")


def _add_shipped_splits(tree: Path, layout: str, root: Path, origin: str) -> dict | None:
    """Copy the protocol's split lists into `tree` for layouts without their own (and check the
    own lists of ``prefix_checked`` layouts against them); return their origin. What a layout
    ships is its :class:`~semiseg.data.registry.Layout` entry's.

    A source with all its lists keeps them; one with some of them is refused (naming `origin`).
    """
    entry = LAYOUTS.get(layout)
    if entry is None or not entry.shipped_splits:
        return None
    names, shipped = entry.shipped_lists, entry.shipped_splits
    lists = Path(root) / shipped
    present = [n for n in names if (tree / n).is_file()]
    if len(present) == len(names):
        if entry.prefix_checked:
            for name in names:
                _check_prefix(tree / name, lists / name, layout)
            return {"splits_checked_against": str(lists.resolve())}
        return None
    if present:
        missing = [n for n in names if n not in present]
        raise DataError(origin, f"the source has {', '.join(present)} but not {', '.join(missing)}: a {layout} "
                                f"source brings all its split lists or none (then the protocol's, from "
                                f"{shipped}/, are used); add the missing ones or remove "
                                f"{', '.join(present)}")
    for name in names:
        if not (lists / name).is_file():
            raise DataError(lists / name, f"the {layout} layout has no split lists of its own and the shipped "
                                          f"list is missing; restore {shipped}/ from the repository")
        shutil.copyfile(lists / name, tree / name)
    return {"splits": str(lists.resolve())}


# ----------------------------------------------------------------------------- the stage
def fetch(dataset: str, source: dict, out_dir: Path, *, how_to_get: str = "", root: Path | None = None,
          downloads: Path | None = None, retries: int = 3, backoff: float = 2.0, timeout: float = 60.0,
          progress=None) -> dict:
    """Fetch `dataset` from `source` into `out_dir`; returns the manifest written beside it.

    Args:
        dataset: the dataset's name (paths and messages).
        source: the catalogue's ``source`` entry: ``layout`` and a generator, ``path`` or ``url``.
        out_dir: the stage's output, ``results/raw/<dataset>``; replaced.
        how_to_get: instructions printed with every error that means "no data here".
        root: the workflow directory; relative ``path`` values and the shipped split lists are
            found from it (default: the checkout around the current directory, found by
            :func:`semiseg.schema.find_root`, else the current directory).
        downloads: where downloads are kept (default ``<out_dir>/../.downloads/<dataset>``).
        retries, backoff, timeout, progress: see :func:`semiseg.data.download.download`.
    """
    out_dir = Path(out_dir)
    root = Path(root) if root is not None else _default_root()
    layout = source["layout"]
    kinds = [k for k in ("path", "url") if source.get(k)]
    if layout in GENERATORS and kinds:
        raise DataError(out_dir, f"{dataset}: layout {layout!r} is generated; its source takes no {kinds[0]!r}")
    if len(kinds) > 1:
        raise DataError(out_dir, f"{dataset}: the source names both a path and a url; keep one (a "
                                 f"config.sources override replaces the catalogue's path/url only if it names one)")
    if source.get("sha256") and not re.fullmatch(r"[0-9a-fA-F]{64}", str(source["sha256"])):
        raise DataError(out_dir, f"{dataset}: sha256 {source['sha256']!r} is not 64 hex digits")
    if not kinds and layout not in GENERATORS:
        raise DataError(out_dir, f"no way to fetch {dataset!r}: its source names neither a generator, a "
                                 f"local path nor a url. {by_hand(dataset, how_to_get)}")
    src = _resolve(source["path"], root) if "path" in kinds else None
    if src is not None and not src.exists():
        where = (f" (relative paths are taken from the workflow directory {root})"
                 if not Path(source["path"]).expanduser().is_absolute() else "")
        raise DataError(src, f"the {dataset} source does not exist{where}. {by_hand(dataset, how_to_get)}")
    t0 = time.time()
    expected = _tree_bytes(src) if src is not None else 0
    if out_dir.exists():  # a failed fetch must not leave an older fetch looking current
        shutil.rmtree(out_dir)
    with atomic_dir(out_dir, expected_bytes=expected) as tmp:
        if layout in GENERATORS:
            _generate(layout, source, tmp)
            origin = {"generator": layout, "seed": int(source.get("seed", 0)), "params": source.get("params", {})}
        elif src is not None:
            origin = _fetch_path(source, src, tmp)
        else:
            where = Path(downloads) if downloads else out_dir.parent / DOWNLOADS / dataset
            archive = download(source["url"], where / filename_for(source["url"], dataset),
                               sha256=source.get("sha256"), dataset=dataset, how_to_get=how_to_get,
                               retries=retries, backoff=backoff, timeout=timeout, progress=progress)
            extract(archive, tmp)
            unwrap(tmp)
            origin = {"url": source["url"], "sha256": source.get("sha256"), "archive": str(archive)}
        splits = _add_shipped_splits(tmp, layout, root, str(src or source.get("url") or out_dir))
        if splits:
            origin.update(splits)
        files = manifest(tmp)
        if not files:
            raise DataError(source.get("path") or source.get("url") or out_dir,
                            f"the {dataset} source holds no files. {by_hand(dataset, how_to_get)}")
        record = {"dataset": dataset, "layout": layout, "source": origin, "files": files,
                  "seconds": round(time.time() - t0, 2)}
        (tmp / MANIFEST).write_text(json.dumps(record, indent=1))
    return record


def _generate(layout: str, source: dict, tmp: Path) -> None:
    """Generate a synthetic layout into the fetch's temporary folder `tmp`. The generator writes
    through a temporary folder of its own, made here inside `tmp`, so a generation killed half-way
    (a full disk can crash HDF5) leaves nothing beside `tmp` for the next attempt to miss: it
    replaces `tmp` whole."""
    made = tmp / "generated"
    GENERATORS[layout](made, seed=int(source.get("seed", 0)), **source.get("params", {}))
    for entry in list(made.iterdir()):
        os.replace(entry, tmp / entry.name)
    made.rmdir()


def _fetch_path(source: dict, src: Path, tmp: Path) -> dict:
    if src.is_dir():
        copy_source_tree(src, tmp)
        return {"path": str(src.resolve())}
    if src.is_file():
        if source.get("sha256"):
            digest = sha256_file(src)
            if digest != source["sha256"].lower():
                raise DataError(src, f"checksum mismatch: expected sha256 {source['sha256']}, got {digest}; "
                                     f"is this the right archive?")
        extract(src, tmp)
        unwrap(tmp)
        return {"path": str(src.resolve()), "sha256": source.get("sha256")}
    raise DataError(src, "neither a folder nor a file (a source is a folder of the layout or an archive of it)")
