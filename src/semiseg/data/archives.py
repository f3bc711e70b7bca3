"""Unpacking the archives a source comes as (a downloaded or a local ``.zip`` / ``.tar.*``).

:func:`extract` checks every member before it writes anything: no absolute path, no ``..``, no
link in a zip, and for tars Python's ``data`` filter (no link out of the tree, no device, no
setuid bit). :func:`unwrap` moves the content of a lone top-level folder (``database/`` in the
official ACDC zip) up one level.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from semiseg.errors import DataError
from semiseg.io import NoSpaceError, is_no_space

__all__ = ["extract", "unwrap"]

_IGNORED_TOP_LEVEL = {"__MACOSX", ".DS_Store"}


def _check_member(name: str, archive: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise DataError(archive, f"unsafe path {name!r} in the archive (absolute or with '..'); not unpacking it")


def extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar(.gz/.bz2/.xz) `archive` into `dest` (created), refusing unsafe paths.

    Raises :class:`DataError` for an unsafe member or a damaged archive, and
    :class:`~semiseg.io.NoSpaceError` (with the unpacked size) when the disk fills up.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise DataError(archive, f"symbolic link {info.filename!r} in the archive; not unpacking it")
                    size += info.file_size
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _check_member(member.name, archive)
                    size += member.size
                # "data" refuses links out of the tree, devices and setuid bits (PEP 706)
                tf.extractall(dest, filter="data")
        else:
            raise DataError(archive, "not a zip or tar archive (a source file must be an archive of the layout)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        if is_no_space(exc):
            raise NoSpaceError(dest / archive.name, size) from None
        raise DataError(archive, f"cannot unpack the archive ({type(exc).__name__}: {exc}); is it complete?") from None


def unwrap(tree: Path) -> None:
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
