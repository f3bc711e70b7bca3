"""One trainer per run folder: an exclusive lock on ``<run>/checkpoints/lock``.

Two trainers in one run folder would resume from the same state, overwrite each other's
checkpoints and, under Snakemake, get each other's outputs deleted. Training therefore holds an
exclusive ``flock`` on a file in the run's checkpoint folder for as long as it runs; a second
trainer finds it taken and stops at once, before it reads or writes anything of the run, with a
message naming the holder's pid, host and start time (written into the lock file).

The kernel releases the lock when the holding process ends, however it ends (``kill -9``, an
out-of-memory kill, a node reboot for a local disk): there is nothing stale to remove by hand, and
the next trainer resumes from the last checkpoint. On NFS, Linux emulates ``flock`` with POSIX
record locks, which hold across nodes where the server supports locking (NFSv4, or v3 with
``lockd``); a file system mounted with ``nolock`` gives no protection across nodes.

Usage::

    with run_folder_lock(out_dir / "checkpoints"):
        ...  # resume, train, publish
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from semiseg.io import file_mode

__all__ = ["LOCK_NAME", "RunFolderBusy", "run_folder_lock"]

LOCK_NAME = "lock"


class RunFolderBusy(RuntimeError):
    """Another process trains in this run folder; the message names it (pid, host, start)."""


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def run_folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of the run whose checkpoint folder is `folder` (created).

    Raises:
        RunFolderBusy: another process holds it (names that process); nothing was touched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            pid, host = who.get("pid", "unknown"), who.get("host", "unknown")
            raise RunFolderBusy(
                f"{folder.parent}: another training runs in this run folder (pid {pid} on host {host}, "
                f"started {who.get('started', 'at an unknown time')}); not starting a second one. Wait for "
                f"it to end, or stop it (on {host}: kill {pid}) and run again: it resumes from the last "
                f"checkpoint. The lock ({path}) is released when that process ends, however it ends."
            ) from None
        # the holder may have finished and removed the folder between our open and our flock:
        # then we hold a lock on a file nobody else will open; take a fresh one
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
        folder.mkdir(parents=True, exist_ok=True)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        yield path
    finally:
        os.close(fd)  # releases the lock (so does the process's end)
