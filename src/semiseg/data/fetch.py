"""The fetch stage: bring a dataset's source layout into ``results/raw/<dataset>/``.

Sources, by the catalogue's ``source`` entry (or ``config.sources.<dataset>``), exactly one of:

- ``layout: synthetic2d | synthetic3d``: generated here, deterministically from ``seed``;
- ``path: <dir or archive>``: a local copy of the layout, either unpacked (copied in with hard
  links where the filesystem allows) or a ``.zip`` / ``.tar.gz`` archive (unpacked; checked
  against ``sha256`` first when one is given). A relative path is taken relative to ``root``,
  the workflow directory, so ``path: ../shared/data/ACDC`` means the same wherever Snakemake
  runs from;
- ``url: <http(s) URL of an archive>`` + ``sha256``: downloaded, verified, unpacked.

After this stage the workflow reads nothing outside ``results/``.

Downloads (:func:`download`) go to ``results/raw/.downloads/<dataset>/`` (beside, not inside,
the stage's output, which Snakemake deletes before re-running the job) and are:

- resumable: bytes arrive in ``<name>.partial``; an interrupted transfer (a dropped connection,
  a short read, a killed job) continues from where it stopped with an HTTP ``Range`` request,
  within one run (up to ``retries`` attempts without progress) and across runs;
- verified: the file is moved to its final name only after its sha256 matched the source's. A
  mismatch deletes it; a source without ``sha256`` is downloaded but never accepted, and the
  error prints the digest to pin (the download is kept as ``.partial``, so the next run only
  checks it);
- explained: a network failure, a server error after the retries, or a refused credential
  raises :class:`DownloadError` with the URL, what went wrong and the dataset's ``how_to_get``
  text, which says how to place the data by hand.

Archives are unpacked with path checks (no absolute paths, no ``..``, no links out of the tree);
an archive whose content sits in one top-level folder (``database/`` in the official ACDC zip)
is unwrapped by one level. Layouts that carry no split lists of their own (``acdc_raw``,
``la_raw``) get the protocol's lists shipped in ``config/`` (:data:`SHIPPED_SPLITS`), copied in so
the manifest checksums them with the data. The LA copy (``la``) usually carries UA-MT's lists: they
are kept, but each must be the shipped list or a first part of it (a trimmed copy, such as a
test subset, keeps the protocol's order, so its first n train cases are still the labeled ones);
a copy without lists gets the shipped ones.

Every fetch ends by writing ``.fetched.json``: the source, and the sha256 and size of every
file. It is written last, and the output directory appears (by a rename) only after it, so a
fetch that failed half-way leaves no output and is never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from semiseg.data.errors import DataError
from semiseg.data.store import sha256_file
from semiseg.data.synthetic import write_synthetic2d, write_synthetic3d

__all__ = ["DOWNLOADS", "DownloadError", "MANIFEST", "PREFIX_CHECKED", "SHIPPED_LISTS", "SHIPPED_SPLITS", "download", "extract",
           "fetch", "manifest", "shipped_splits_digest"]

log = logging.getLogger("semiseg.fetch")

MANIFEST = ".fetched.json"
#: Folder beside the fetched datasets that holds downloads (partial and verified).
DOWNLOADS = ".downloads"
GENERATORS = {"synthetic2d": write_synthetic2d, "synthetic3d": write_synthetic3d}
#: layout -> folder (relative to the workflow root) of the train/val/test lists it lacks.
SHIPPED_SPLITS = {"acdc_raw": "config/datasets/acdc_splits", "la": "config/datasets/la_splits",
                  "la_raw": "config/datasets/la_splits"}
SPLIT_LISTS = ("train.list", "val.list", "test.list")
#: layout -> the lists it ships, where not all of SPLIT_LISTS (the LA protocol has no val list).
SHIPPED_LISTS = {"la": ("train.list", "test.list"), "la_raw": ("train.list", "test.list")}
#: Layouts whose own lists are kept only when each is the shipped list or a first part of it.
PREFIX_CHECKED = {"la", "la_raw"}

_CHUNK = 1 << 20
_PARTIAL = ".partial"
# HTTP statuses that another attempt cannot fix (other 4xx) or that mean "credentials".
_AUTH_STATUSES = (401, 403, 407)
_IGNORED_TOP_LEVEL = {"__MACOSX", ".DS_Store"}


class DownloadError(DataError):
    """A download failed: network, server or credentials. The message says how to get the data
    by hand (the dataset's ``how_to_get``)."""


def _by_hand(dataset: str, how_to_get: str) -> str:
    """The 'place it yourself' instructions every network or credential error ends with."""
    generic = (f"To place the data by hand, download and unpack it yourself and point the "
               f"workflow at it: `sources: {{{dataset}: {{path: /where/it/is}}}}` in "
               f"config/config.yaml (or --config 'sources={{{dataset}: {{path: /where/it/is}}}}').")
    return f"{how_to_get.strip()} {generic}".strip() if how_to_get.strip() else generic


def manifest(root: Path) -> dict[str, dict]:
    """sha256 and size of every file below `root` (the manifest itself excluded), sorted by path."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(_PARTIAL):
            out[str(p.relative_to(root))] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ----------------------------------------------------------------------------- download
def _filename(url: str, dataset: str) -> str:
    """A local file name for `url`: its last path component, or ``<dataset>.download``."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if not name or name in (".", "..") or "." not in name:
        return f"{dataset}.download"
    return name


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _expected_size(resp, offset: int) -> int | None:
    """Total size of the file from a 200/206 response, if the server says."""
    if resp.status == 206:
        m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if m and m[3] != "*":
            return int(m[3])
    length = resp.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return int(length) + (offset if resp.status == 206 else 0)


def _range_start(resp) -> int | None:
    m = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(m[1]) if m else None


def _drop_empty(partial: Path) -> None:
    if partial.exists() and not partial.stat().st_size:
        partial.unlink()


def download(url: str, dest: Path, *, sha256: str | None, dataset: str = "data", how_to_get: str = "",
             retries: int = 3, backoff: float = 2.0, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resumably, and return `dest` once its sha256 is `sha256`.

    Bytes go to ``<dest>.partial``, which a later call (or the next attempt of this one)
    continues with a ``Range`` request; a server that ignores ``Range`` (status 200) sends the
    whole file again. `dest` itself only ever holds a verified file: it is reused, without
    network, when its digest matches.

    Args:
        url: an ``http://`` or ``https://`` URL.
        dest: the final path of the verified file.
        sha256: the expected hex digest. ``None`` downloads but raises :class:`DataError` with
            the digest found (the ``.partial`` file is kept), so that nothing unverified is used.
        dataset, how_to_get: named in the errors, with the instructions to get the data by hand.
        retries: further attempts after a failed one (connection refused or reset, timeout,
            short read, HTTP 5xx); an attempt that received bytes resets the count.
        backoff: seconds before the first retry, doubled for each next one.
        timeout: socket timeout per connection and read, in seconds.

    Raises:
        DownloadError: the server refused the credentials (401/403/407: no retry), the file is
            not there (other 4xx), or every attempt failed. The ``.partial`` file is kept for
            the next run to resume; nothing is left at `dest`.
        DataError: the checksum does not match (the download is deleted), or no `sha256` given.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + _PARTIAL)
    hint = _by_hand(dataset, how_to_get)
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(url, f"only http:// and https:// URLs can be downloaded. {hint}")
    if dest.exists():
        if sha256 and sha256_file(dest) == sha256.lower():
            log.info("%s: already downloaded and verified", dest)
            return dest
        dest.unlink()  # not what the source names now: never use it

    failures = 0
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        headers = {"User-Agent": "semiseg-fetch", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        received = 0
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if resp.status == 206:
                    if _range_start(resp) != offset:  # not the bytes asked for: start afresh
                        partial.unlink(missing_ok=True)
                        raise http.client.HTTPException(f"the server sent another range than bytes={offset}-")
                    mode = "ab"
                else:  # 200: the whole file (the server ignores Range, or we start afresh)
                    if offset:
                        log.info("%s: the server does not resume; downloading from the start", url)
                    mode, offset = "wb", 0
                total = _expected_size(resp, offset)
                with open(partial, mode) as fh:
                    while chunk := resp.read(_CHUNK):
                        fh.write(chunk)
                        received += len(chunk)
            size = offset + received
            if total is None or size == total:
                break
            error = f"the connection closed after {size} of {total} bytes"
            if size > total:  # more than the server announced: start again from nothing
                partial.unlink()
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: the partial file is complete
                break
            if 400 <= exc.code < 500:
                _drop_empty(partial)
            if exc.code in _AUTH_STATUSES:
                raise DownloadError(url, f"{_describe(exc)}: the server refused access; the download "
                                         f"needs credentials (or they expired). {hint}") from None
            if 400 <= exc.code < 500:
                raise DownloadError(url, f"{_describe(exc)}: no file to download there; the URL may have "
                                         f"moved. {hint}") from None
            error = _describe(exc)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            error = _describe(exc)
        failures = 0 if received else failures + 1
        if failures > retries:
            _drop_empty(partial)
            kept = (f" {partial.stat().st_size} bytes are kept in {partial} and the next run resumes "
                    f"from there." if partial.exists() else "")
            raise DownloadError(url, f"download failed after {failures} attempts without progress, last: "
                                     f"{error}.{kept} {hint}")
        wait = backoff * 2 ** max(failures - 1, 0)
        log.warning("%s: %s; retrying in %.0f s (%d of %d)", url, error, wait, failures, retries)
        time.sleep(wait)

    digest = sha256_file(partial)
    size = partial.stat().st_size
    if sha256 is None:
        raise DataError(url, f"downloaded {size} bytes with sha256 {digest}, but the source names no "
                             f"sha256 to check them against. If {url} is what you expect, add "
                             f"`sha256: {digest}` to the dataset's source; the download stays in "
                             f"{partial} and the next run only verifies it.")
    if digest != sha256.lower():
        partial.unlink()
        raise DataError(url, f"checksum mismatch: expected sha256 {sha256}, got {digest} ({size} bytes); "
                             f"the download was deleted. Either the file on the server changed (check the "
                             f"sha256 in the config) or it was corrupted on the way (run again). {hint}")
    os.replace(partial, dest)
    return dest


# ----------------------------------------------------------------------------- archives
def _check_member(name: str, archive: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise DataError(archive, f"unsafe path {name!r} in the archive (absolute or with '..'); not unpacking it")


def extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar(.gz/.bz2/.xz) `archive` into `dest` (created), refusing unsafe paths."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise DataError(archive, f"symbolic link {info.filename!r} in the archive; not unpacking it")
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _check_member(member.name, archive)
                # "data" refuses links out of the tree, devices and setuid bits (PEP 706)
                tf.extractall(dest, filter="data")
        else:
            raise DataError(archive, "not a zip or tar archive (a source file must be an archive of the layout)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(archive, f"cannot unpack the archive ({type(exc).__name__}: {exc}); is it complete?") from None


def _unwrap(tree: Path) -> None:
    """Move the content of a lone top-level folder of `tree` up one level."""
    entries = [p for p in tree.iterdir() if p.name not in _IGNORED_TOP_LEVEL]
    if len(entries) != 1 or not entries[0].is_dir():
        return
    inner = entries[0]
    for junk in tree.iterdir():
        if junk.name in _IGNORED_TOP_LEVEL:
            shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
    holding = tree / f".unwrap-{os.getpid()}"
    inner.rename(holding)
    for child in holding.iterdir():
        child.rename(tree / child.name)
    holding.rmdir()


def _default_root() -> Path:
    """The workflow directory: the checkout around the current directory, else the directory itself."""
    from semiseg.config import ConfigError, find_root

    try:
        return find_root()
    except ConfigError:
        return Path.cwd()


def _resolve(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p


def shipped_splits_digest(layout: str | None, root: Path) -> str:
    """sha256 over the split lists a layout without its own takes from ``config/``
    (:data:`SHIPPED_SPLITS`); ``"none"`` for every other layout. The fetch rule carries it as a
    param, so editing a shipped list fetches again (and re-runs what follows)."""
    if layout not in SHIPPED_SPLITS:
        return "none"
    h = hashlib.sha256()
    for name in SHIPPED_LISTS.get(layout, SPLIT_LISTS):
        f = Path(root) / SHIPPED_SPLITS[layout] / name
        h.update(name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b"<missing>") + b"\0")
    return h.hexdigest()[:16]


def _list_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


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


def _add_shipped_splits(tree: Path, layout: str, root: Path) -> dict | None:
    """Copy the protocol's split lists into `tree` for layouts without their own (and check the
    own lists of :data:`PREFIX_CHECKED` layouts against them); return their origin."""
    names = SHIPPED_LISTS.get(layout, SPLIT_LISTS)
    if layout not in SHIPPED_SPLITS:
        return None
    lists = Path(root) / SHIPPED_SPLITS[layout]
    if all((tree / n).is_file() for n in names):
        if layout in PREFIX_CHECKED:
            for name in names:
                _check_prefix(tree / name, lists / name, layout)
            return {"splits_checked_against": str(lists.resolve())}
        return None
    for name in names:
        if not (lists / name).is_file():
            raise DataError(lists / name, f"the {layout} layout has no split lists of its own and the shipped "
                                          f"list is missing; restore {SHIPPED_SPLITS[layout]}/ from the repository")
        shutil.copyfile(lists / name, tree / name)
    return {"splits": str(lists.resolve())}


# ----------------------------------------------------------------------------- the stage
def fetch(dataset: str, source: dict, out_dir: Path, *, how_to_get: str = "", root: Path | None = None,
          downloads: Path | None = None, retries: int = 3, backoff: float = 2.0, timeout: float = 60.0) -> dict:
    """Fetch `dataset` from `source` into `out_dir`; returns the manifest written beside it.

    Args:
        dataset: the dataset's name (paths and messages).
        source: the catalogue's ``source`` entry: ``layout`` and a generator, ``path`` or ``url``.
        out_dir: the stage's output, ``results/raw/<dataset>``; replaced.
        how_to_get: instructions printed with every error that means "no data here".
        root: the workflow directory; relative ``path`` values and the shipped split lists are
            found from it (default: the checkout around the current directory, found by
            :func:`semiseg.config.find_root`, else the current directory).
        downloads: where downloads are kept (default ``<out_dir>/../.downloads/<dataset>``).
        retries, backoff, timeout: see :func:`download`.
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
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    t0 = time.time()
    try:
        if layout in GENERATORS:
            GENERATORS[layout](tmp, seed=int(source.get("seed", 0)), **source.get("params", {}))
            origin = {"generator": layout, "seed": int(source.get("seed", 0)), "params": source.get("params", {})}
        elif "path" in kinds:
            origin = _fetch_path(dataset, source, tmp, root, how_to_get)
        elif "url" in kinds:
            where = Path(downloads) if downloads else out_dir.parent / DOWNLOADS / dataset
            archive = download(source["url"], where / _filename(source["url"], dataset),
                               sha256=source.get("sha256"), dataset=dataset, how_to_get=how_to_get,
                               retries=retries, backoff=backoff, timeout=timeout)
            extract(archive, tmp)
            _unwrap(tmp)
            origin = {"url": source["url"], "sha256": source.get("sha256"), "archive": str(archive)}
        else:
            raise DataError(out_dir, f"no way to fetch {dataset!r}: its source names neither a generator, a "
                                     f"local path nor a url. {_by_hand(dataset, how_to_get)}")
        splits = _add_shipped_splits(tmp, layout, root)
        if splits:
            origin.update(splits)
        files = manifest(tmp)
        if not files:
            raise DataError(source.get("path") or source.get("url") or out_dir,
                            f"the {dataset} source holds no files. {_by_hand(dataset, how_to_get)}")
        record = {"dataset": dataset, "layout": layout, "source": origin, "files": files,
                  "seconds": round(time.time() - t0, 2)}
        with open(tmp / MANIFEST, "w") as fh:
            json.dump(record, fh, indent=1)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _fetch_path(dataset: str, source: dict, tmp: Path, root: Path, how_to_get: str) -> dict:
    src = _resolve(source["path"], root)
    if src.is_dir():
        shutil.copytree(src, tmp, copy_function=_link_or_copy)
        return {"path": str(src.resolve())}
    if src.is_file():
        if source.get("sha256"):
            digest = sha256_file(src)
            if digest != source["sha256"].lower():
                raise DataError(src, f"checksum mismatch: expected sha256 {source['sha256']}, got {digest}; "
                                     f"is this the right archive?")
        extract(src, tmp)
        _unwrap(tmp)
        return {"path": str(src.resolve()), "sha256": source.get("sha256")}
    where = (f" (relative paths are taken from the workflow directory {root})"
             if not Path(source["path"]).expanduser().is_absolute() else "")
    raise DataError(src, f"the {dataset} source does not exist{where}. {_by_hand(dataset, how_to_get)}")
