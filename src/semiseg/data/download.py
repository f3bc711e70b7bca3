"""Downloads: resumable, verified, explained, with progress.

:func:`download` fetches one archive for the fetch stage (:mod:`semiseg.data.fetch`), which keeps
it in ``results/raw/.downloads/<dataset>/`` (beside, not inside, the stage's output, which
Snakemake deletes before re-running the job). A download is:

- resumable: bytes arrive in ``<name>.partial``; an interrupted transfer (a dropped connection,
  a short read, a killed job) continues from where it stopped with an HTTP ``Range`` request,
  within one run (up to ``retries`` attempts without progress) and across runs;
- verified: the file is moved to its final name only after its sha256 matched the source's. A
  mismatch deletes it; a source without ``sha256`` is downloaded but never accepted, and the
  error prints the digest to pin (the download is kept as ``.partial``, so the next run only
  checks it);
- explained: a network failure, a server error after the retries, or a refused credential
  raises :class:`DownloadError` with the URL, what went wrong and the dataset's ``how_to_get``
  text, which says how to place the data by hand;
- visible: a byte counter on stderr (:class:`Progress`): one line redrawn in place on a terminal,
  else (a job log) a newline-terminated line every ``interval`` seconds and one at the end, e.g.
  ``download acdc.zip: 1536.0 of 2457.6 MB (62 %), 11.2 MB/s, about 1 min 22 s left``.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import TextIO

from semiseg.errors import DataError
from semiseg.io import NoSpaceError, is_no_space, sha256_file

__all__ = ["DownloadError", "Progress", "by_hand", "download", "filename_for"]

log = logging.getLogger("semiseg.fetch")

_CHUNK = 1 << 20
_PARTIAL = ".partial"
# HTTP statuses that another attempt cannot fix (other 4xx) or that mean "credentials".
_AUTH_STATUSES = (401, 403, 407)
_MB = 1 << 20


class DownloadError(DataError):
    """A download failed: network, server or credentials. The message says how to get the data
    by hand (the dataset's ``how_to_get``)."""


def by_hand(dataset: str, how_to_get: str) -> str:
    """The 'place it yourself' instructions every network or credential error ends with."""
    generic = (f"To place the data by hand, download and unpack it yourself and point the "
               f"workflow at it: `sources: {{{dataset}: {{path: /where/it/is}}}}` in "
               f"config/config.yaml (or --config 'sources={{{dataset}: {{path: /where/it/is}}}}').")
    return f"{how_to_get.strip()} {generic}".strip() if how_to_get.strip() else generic


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Progress:
    """A byte counter for one download, written to `stream` (default: stderr).

    On a terminal, one line redrawn in place (at most every 0.5 s); elsewhere (a job log, a pipe)
    a newline-terminated line at most every `interval` seconds, so a log holds a few lines, not
    one line of carriage returns. :meth:`done` ends with a final line.
    """

    def __init__(self, name: str, *, total: int | None, start: int = 0, stream: TextIO | None = None,
                 interval: float = 30.0) -> None:
        self.name, self.total, self.start = name, total, start
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.interval = 0.5 if self.tty else interval
        self.t0 = self._last = time.monotonic()
        self.bytes = start

    def line(self) -> str:
        """The current state, e.g. ``download x.zip: 12.0 of 48.0 MB (25 %), 3.0 MB/s, about 12 s left``."""
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        rate = (self.bytes - self.start) / elapsed
        text = f"download {self.name}: {self.bytes / _MB:.1f}"
        if self.total:
            text += f" of {self.total / _MB:.1f} MB ({100 * self.bytes / self.total:.0f} %)"
        else:
            text += " MB"
        text += f", {rate / _MB:.1f} MB/s"
        if self.total and rate > 0 and self.bytes < self.total:
            text += f", about {_duration((self.total - self.bytes) / rate)} left"
        return text

    def update(self, n: int) -> None:
        self.bytes += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write()

    def _write(self, end: str = "") -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K" + end)
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def done(self) -> None:
        self._write("\n")


def filename_for(url: str, dataset: str) -> str:
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


class _Attempt:
    """One request: where in the file it starts (0 once the server sends the whole file), the
    bytes received, the size announced (None: not said)."""

    def __init__(self, offset: int):
        self.offset, self.received, self.total = offset, 0, None


def _receive(resp, attempt: _Attempt, url: str, partial: Path, meter_for) -> None:
    """Append the response's bytes to ``partial`` (206: the range asked for) or write them afresh
    (200: the whole file), counting them in ``attempt``; ``meter_for(total, start)`` counts them
    on screen."""
    if resp.status == 206:
        if _range_start(resp) != attempt.offset:  # not the bytes asked for: start afresh
            partial.unlink(missing_ok=True)
            raise http.client.HTTPException(f"the server sent another range than bytes={attempt.offset}-")
        mode = "ab"
    else:  # 200: the whole file (the server ignores Range, or we start afresh)
        if attempt.offset:
            log.info("%s: the server does not resume; downloading from the start", url)
        mode, attempt.offset = "wb", 0
    attempt.total = _expected_size(resp, attempt.offset)
    meter = meter_for(attempt.total, attempt.offset)
    try:
        with open(partial, mode) as fh:
            while chunk := resp.read(_CHUNK):
                fh.write(chunk)
                attempt.received += len(chunk)
                meter.update(len(chunk))
    finally:
        meter.done()


def _refused(exc: urllib.error.HTTPError, url: str, partial: Path, hint: str) -> None:
    """Raise :class:`DownloadError` for a 4xx status (no retry can help); return for any other."""
    if not 400 <= exc.code < 500:
        return
    _drop_empty(partial)
    if exc.code in _AUTH_STATUSES:
        raise DownloadError(url, f"{_describe(exc)}: the server refused access; the download "
                                 f"needs credentials (or they expired). {hint}") from None
    raise DownloadError(url, f"{_describe(exc)}: no file to download there; the URL may have "
                             f"moved. {hint}") from None


def _verify(partial: Path, url: str, sha256: str | None, hint: str) -> None:
    """``partial`` has the expected digest; else :class:`DataError` (and a mismatch is deleted)."""
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


def download(url: str, dest: Path, *, sha256: str | None, dataset: str = "data", how_to_get: str = "",
             retries: int = 3, backoff: float = 2.0, timeout: float = 60.0,
             progress: TextIO | None = None, progress_interval: float = 30.0) -> Path:
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
        progress, progress_interval: where the byte counter goes (default: stderr) and how often
            it prints a line when that is not a terminal (:class:`Progress`).

    Raises:
        DownloadError: the server refused the credentials (401/403/407: no retry), the file is
            not there (other 4xx), or every attempt failed. The ``.partial`` file is kept for
            the next run to resume; nothing is left at `dest`.
        DataError: the checksum does not match (the download is deleted), or no `sha256` given.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + _PARTIAL)
    hint = by_hand(dataset, how_to_get)
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(url, f"only http:// and https:// URLs can be downloaded. {hint}")
    if dest.exists():
        if sha256 and sha256_file(dest) == sha256.lower():
            log.info("%s: already downloaded and verified", dest)
            return dest
        dest.unlink()  # not what the source names now: never use it

    failures = 0
    while True:
        attempt = _Attempt(partial.stat().st_size if partial.exists() else 0)
        headers = {"User-Agent": "semiseg-fetch", "Accept-Encoding": "identity"}
        if attempt.offset:
            headers["Range"] = f"bytes={attempt.offset}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                _receive(resp, attempt, url, partial, lambda total, start: Progress(
                    dest.name, total=total, start=start, stream=progress, interval=progress_interval))
            size, total = attempt.offset + attempt.received, attempt.total
            if total is None or size == total:
                break
            error = f"the connection closed after {size} of {total} bytes"
            if size > total:  # more than the server announced: start again from nothing
                partial.unlink()
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and attempt.offset:  # nothing left to send: the partial file is complete
                break
            _refused(exc, url, partial, hint)
            error = _describe(exc)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if is_no_space(exc):  # another attempt cannot help; the next run resumes what arrived
                raise NoSpaceError(partial, max(attempt.total or 0, attempt.offset + attempt.received)) from None
            error = _describe(exc)
        failures = 0 if attempt.received else failures + 1
        if failures > retries:
            _drop_empty(partial)
            kept = (f" {partial.stat().st_size} bytes are kept in {partial} and the next run resumes "
                    f"from there." if partial.exists() else "")
            raise DownloadError(url, f"download failed after {failures} attempts without progress, last: "
                                     f"{error}.{kept} {hint}")
        wait = backoff * 2 ** max(failures - 1, 0)
        log.warning("%s: %s; retrying in %.0f s (%d of %d)", url, error, wait, failures, retries)
        time.sleep(wait)

    _verify(partial, url, sha256, hint)
    os.replace(partial, dest)
    return dest
