"""Writing outputs so that no reader ever sees half a file, and the one sha256 helper.

Every output of the pipeline (stores, checkpoints, metrics, tables, records, generated or
fetched folders) is written through this module:

- :func:`atomic_write` (text, bytes or a torch object) and :func:`atomic_path` (a temporary path
  for a writer that wants a file name, e.g. h5py) write ``.<name>.tmp`` in the destination's
  folder and rename it over the destination once complete; :func:`atomic_dir` does the same for
  a folder (``.<name>.partial``). The temporary name is fixed, so an attempt that was killed
  leaves at most one temporary file, which the next attempt replaces; a failed attempt removes
  its own.
- Files get the mode ``0666 & ~umask`` and folders ``0777 & ~umask``, as ``open`` and ``mkdir``
  would give them (``tempfile.mkstemp`` would make them private to the owner, which a group
  sharing a project directory cannot read).
- A full disk raises :class:`NoSpaceError`, one line: ``no space left on <folder>, needed about
  N MB (writing <name>)``, and leaves no temporary file behind.

Two writers of the same destination at the same time would share the temporary name; the
workflow never does that (Snakemake's locks and the run-folder lock of
:mod:`semiseg.engine.runlock` keep them apart).
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NoSpaceError", "atomic_copy", "atomic_dir", "atomic_path", "atomic_write", "dir_mode", "ensure_free",
           "file_mode", "is_no_space", "read_text", "sha256_file", "temp_name", "umask"]

_CHUNK = 1 << 20
_MB = 1 << 20


def umask() -> int:
    """The process's umask (read without changing it where Linux says it; else set and restored)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a new file gets: ``0666 & ~umask``."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode a new folder gets: ``0777 & ~umask``."""
    return 0o777 & ~umask()


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a UTF-8 file (a byte-order mark, as some editors write, is dropped).

    Raises :class:`~semiseg.errors.DataError` naming the file, the line and the byte when the
    file is not UTF-8 (e.g. Latin-1), and for a missing file.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        from semiseg.errors import DataError

        raise DataError(path, "file does not exist") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        from semiseg.errors import DataError

        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text (is the file in "
                              f"another encoding, such as Latin-1?); save it as UTF-8") from None


def sha256_file(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """The hex sha256 of a file, read in `chunk_size` pieces (constant memory).

    Raises :class:`~semiseg.errors.DataError` ("file does not exist") for a missing file.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
    except FileNotFoundError:
        from semiseg.errors import DataError

        raise DataError(path, "file does not exist") from None
    return digest.hexdigest()


class NoSpaceError(OSError):
    """The disk is full: names the folder and about how much the write needed."""

    def __init__(self, path: str | os.PathLike[str], needed_bytes: int) -> None:
        path = Path(path)
        self.path, self.needed_bytes = path, int(needed_bytes)
        mb = max(1, math.ceil(self.needed_bytes / _MB))
        super().__init__(errno.ENOSPC, f"no space left on {path.parent}, needed about {mb} MB (writing "
                                       f"{path.name}); free some space and run again")

    def __str__(self) -> str:
        return self.strerror


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc` means "the disk is full" (an ``OSError`` with ``ENOSPC``, or a library's error
    that says so in its text, as h5py's and torch's do)."""
    if isinstance(exc, NoSpaceError):
        return False  # already explained
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return isinstance(exc, (OSError, RuntimeError)) and (
        "No space left" in text or "errno = 28" in text or "Disk quota exceeded" in text)


def ensure_free(path: str | os.PathLike[str], nbytes: int, *, margin: int = 16 * _MB) -> None:
    """Raise :class:`NoSpaceError` unless the file system of `path` (a file being written, or a
    folder) has `nbytes` and `margin` free. For writers that cannot fail cleanly on a full disk
    (HDF5 may crash the process when a write fails); `nbytes` may be an upper bound (the
    uncompressed size): the check errs on the side of stopping."""
    path = Path(path)
    where = path if path.is_dir() else path.parent
    free = shutil.disk_usage(where).free
    if free < nbytes + margin:
        raise NoSpaceError(path, _size(path) + nbytes + margin)


def temp_name(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """The fixed temporary name beside `path`: ``.<name><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}{suffix}")


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.stat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield the temporary path of `path`; once the block ends without error, it is flushed to
    disk, given the umask's mode and renamed to `path`. On an error it is removed; a full disk
    becomes :class:`NoSpaceError` (`expected_bytes`, if known, is the size it reports)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    _remove(tmp)  # a killed earlier attempt's
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        written = _size(tmp)
        _remove(tmp)
        if is_no_space(exc):
            raise NoSpaceError(path, max(expected_bytes, written)) from exc
        if isinstance(exc, NoSpaceError) and exc.path == tmp:  # from ensure_free: name the output
            raise NoSpaceError(path, exc.needed_bytes) from None
        raise


def _as_bytes(data) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    import torch  # a torch object: serialised in memory first, so a full disk is a plain OSError

    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def atomic_write(path: str | os.PathLike[str], data) -> Path:
    """Write `data` to `path` atomically: ``str`` as UTF-8 text (newlines as given), ``bytes`` as
    they are, anything else with ``torch.save``. Returns `path`."""
    path = Path(path)
    blob = _as_bytes(data)
    with atomic_path(path, expected_bytes=len(blob)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(blob)
    return path


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy the bytes of `src` to `dst` atomically (a new file: `dst` never shares `src`'s inode,
    and `src` is left as it was). Returns `dst`."""
    src, dst = Path(src), Path(dst)
    with atomic_path(dst, expected_bytes=_size(src)) as tmp:
        shutil.copyfile(src, tmp)
    return dst


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield an empty temporary folder ``.<name>.partial`` beside `path` (created with the umask's
    mode); once the block ends without error it replaces `path`. On an error it is removed; a full
    disk becomes :class:`NoSpaceError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path, ".partial")
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            _remove(path)
        os.replace(tmp, path)
    except BaseException as exc:
        written = _size(tmp)
        _remove(tmp)
        if is_no_space(exc):
            raise NoSpaceError(path, max(expected_bytes, written)) from exc
        if isinstance(exc, NoSpaceError) and tmp in exc.path.parents:  # from ensure_free: name the output
            raise NoSpaceError(path, max(expected_bytes, written + exc.needed_bytes)) from None
        raise
