"""The fetch stage: local sources, and downloads against a real HTTP server on loopback.

The server (``http.server`` in a thread on 127.0.0.1) serves files with HTTP Range support and
can be told to misbehave per request: cut the body short (a dropped connection), answer 500,
refuse credentials (401), stall, or ignore Range. Every test checks what the stage leaves on disk
after a failure: no output directory, nothing at the download's final name, and a ``.partial``
file only where a later run can resume from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import time
import zipfile

import numpy as np
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from semiseg.errors import DataError
from semiseg.data.fetch import DOWNLOADS, MANIFEST, DownloadError, download, fetch

REPO = Path(__file__).resolve().parents[1]
HOWTO = "HOW-TO-GET: put the files in /data/x by hand."


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tgz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# A layout inside one top-level folder, as real archives are packed; large enough to be cut.
LAYOUT = {"ACDC/train.list": b"patient001_frame01\n", "ACDC/test.list": b"patient002_frame01\n",
          "ACDC/data/blob.bin": bytes(range(256)) * 4096}
ARCHIVE = _zip_bytes(LAYOUT)
SHA = hashlib.sha256(ARCHIVE).hexdigest()


class Server:
    """Loopback HTTP server; `files` maps a path to bytes, `plan` queues per-request misbehaviour."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.plan: list[str] = []  # "cut", "500", "401", "stall", "norange"; consumed one per request
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                action = server.plan.pop(0) if server.plan else ""
                rng = self.headers.get("Range")
                data = server.files.get(self.path)
                server.requests.append((self.path, rng, None))
                i = len(server.requests) - 1
                try:
                    status = self._respond(action, rng, data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    status = None
                server.requests[i] = (self.path, rng, status)

            def _respond(self, action, rng, data):
                if action in ("500", "401"):
                    self.send_error(int(action))
                    return int(action)
                if action == "stall":
                    time.sleep(1.5)
                if data is None:
                    self.send_error(404)
                    return 404
                start = 0
                if rng and action != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return 416
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if action == "cut":  # announce everything, send a third, drop the connection
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return 206 if start else 200
                self.wfile.write(body)
                return 206 if start else 200

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    s.files["/acdc.zip"] = ARCHIVE
    yield s
    s.close()


def _fetch(url, tmp_path, sha256=SHA, **kw):
    kw.setdefault("retries", 2)
    kw.setdefault("backoff", 0.0)
    kw.setdefault("timeout", 5.0)
    source = {"layout": "slices", "url": url, **({"sha256": sha256} if sha256 else {})}
    return fetch("acdc", source, tmp_path / "raw" / "acdc", how_to_get=HOWTO, **kw)


def _downloads(tmp_path) -> list[str]:
    d = tmp_path / "raw" / DOWNLOADS / "acdc"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _assert_no_output(tmp_path):
    raw = tmp_path / "raw"
    assert not (raw / "acdc").exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".acdc")] if raw.is_dir() else True


# ----------------------------------------------------------------------------- success paths
def test_url_download_is_verified_unpacked_and_unwrapped(server, tmp_path):
    rec = _fetch(f"{server.url}/acdc.zip", tmp_path)
    out = tmp_path / "raw" / "acdc"
    # the archive's lone top-level folder ACDC/ is unwrapped: the layout's lists are at the root
    assert (out / "train.list").read_bytes() == LAYOUT["ACDC/train.list"]
    assert (out / "data" / "blob.bin").read_bytes() == LAYOUT["ACDC/data/blob.bin"]
    assert rec["source"]["url"] == f"{server.url}/acdc.zip" and rec["source"]["sha256"] == SHA
    assert json.loads((out / MANIFEST).read_text())["files"]["data/blob.bin"]["bytes"] == 256 * 4096
    assert _downloads(tmp_path) == ["acdc.zip"]  # kept, verified, under its final name
    # a second fetch reuses the verified download without touching the network
    n = len(server.requests)
    _fetch(f"{server.url}/acdc.zip", tmp_path)
    assert len(server.requests) == n


def test_tar_gz_archives_and_urls_without_a_file_name(server, tmp_path):
    data = _tgz_bytes(LAYOUT)
    server.files["/api/folder/123/download"] = data
    _fetch(f"{server.url}/api/folder/123/download", tmp_path, sha256=hashlib.sha256(data).hexdigest())
    assert (tmp_path / "raw" / "acdc" / "test.list").is_file()
    assert _downloads(tmp_path) == ["acdc.download"]


# ----------------------------------------------------------------------------- checksum
def test_bad_checksum_deletes_the_download_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DataError, match="checksum mismatch") as err:
        _fetch(f"{server.url}/acdc.zip", tmp_path, sha256="0" * 64)
    assert SHA in str(err.value) and HOWTO in str(err.value)
    assert _downloads(tmp_path) == []
    _assert_no_output(tmp_path)


def test_without_sha256_nothing_is_accepted_and_the_digest_is_printed(server, tmp_path):
    with pytest.raises(DataError, match=f"sha256: {SHA}"):
        _fetch(f"{server.url}/acdc.zip", tmp_path, sha256=None)
    assert _downloads(tmp_path) == ["acdc.zip.partial"]  # kept, but never under its final name
    _assert_no_output(tmp_path)
    # pinned now: the kept bytes are only verified (the server answers 416: nothing left to send)
    _fetch(f"{server.url}/acdc.zip", tmp_path)
    assert server.requests[-1][1] == f"bytes={len(ARCHIVE)}-" and server.requests[-1][2] == 416
    assert _downloads(tmp_path) == ["acdc.zip"]


def test_a_corrupt_verified_file_is_not_reused(server, tmp_path):
    _fetch(f"{server.url}/acdc.zip", tmp_path)
    final = tmp_path / "raw" / DOWNLOADS / "acdc" / "acdc.zip"
    final.write_bytes(b"garbage")
    _fetch(f"{server.url}/acdc.zip", tmp_path)
    assert final.read_bytes() == ARCHIVE


# ----------------------------------------------------------------------------- interruptions
def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.plan = ["cut"]
    _fetch(f"{server.url}/acdc.zip", tmp_path)
    (first, r1, s1), (second, r2, s2) = server.requests
    assert r1 is None and s1 == 200
    assert r2 == f"bytes={len(ARCHIVE) // 3}-" and s2 == 206
    assert (tmp_path / "raw" / "acdc" / "data" / "blob.bin").is_file()


def test_an_interrupted_download_resumes_on_the_next_run(server, tmp_path):
    server.plan = ["cut", "500"]
    with pytest.raises(DownloadError, match="HTTP 500") as err:
        _fetch(f"{server.url}/acdc.zip", tmp_path, retries=0)
    msg = str(err.value)
    assert f"{len(ARCHIVE) // 3} bytes are kept" in msg and HOWTO in msg
    assert _downloads(tmp_path) == ["acdc.zip.partial"]
    _assert_no_output(tmp_path)
    _fetch(f"{server.url}/acdc.zip", tmp_path)
    assert server.requests[-1][1:] == (f"bytes={len(ARCHIVE) // 3}-", 206)
    assert _downloads(tmp_path) == ["acdc.zip"]


def test_a_server_that_ignores_range_sends_the_whole_file_again(server, tmp_path):
    dl = tmp_path / "raw" / DOWNLOADS / "acdc"
    dl.mkdir(parents=True)
    (dl / "acdc.zip.partial").write_bytes(b"stale bytes from another file")
    server.plan = ["norange"]
    _fetch(f"{server.url}/acdc.zip", tmp_path)
    assert server.requests[0][2] == 200
    assert (dl / "acdc.zip").read_bytes() == ARCHIVE


def test_a_stalled_server_times_out_and_is_retried(server, tmp_path):
    server.plan = ["stall"]
    _fetch(f"{server.url}/acdc.zip", tmp_path, timeout=0.5, retries=1)
    assert len(server.requests) >= 2


# ----------------------------------------------------------------------------- failures
def test_server_error_500_is_retried_then_explained(server, tmp_path):
    server.plan = ["500"] * 3
    with pytest.raises(DownloadError) as err:
        _fetch(f"{server.url}/acdc.zip", tmp_path, retries=2)
    msg = str(err.value)
    assert "3 attempts" in msg and "HTTP 500" in msg and HOWTO in msg and "sources: {acdc: {path:" in msg
    assert len(server.requests) == 3
    assert _downloads(tmp_path) == []
    _assert_no_output(tmp_path)


def test_connection_refused_is_explained_and_leaves_nothing(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect") as err:
        _fetch(f"http://127.0.0.1:{port}/acdc.zip", tmp_path, retries=1)
    assert HOWTO in str(err.value)
    assert _downloads(tmp_path) == []
    _assert_no_output(tmp_path)


def test_refused_credentials_are_not_retried(server, tmp_path):
    server.plan = ["401"]
    with pytest.raises(DownloadError, match="credentials") as err:
        _fetch(f"{server.url}/acdc.zip", tmp_path)
    assert HOWTO in str(err.value) and len(server.requests) == 1
    assert _downloads(tmp_path) == []


def test_a_missing_file_on_the_server_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        _fetch(f"{server.url}/moved.zip", tmp_path)
    assert HOWTO in str(err.value) and len(server.requests) == 1
    _assert_no_output(tmp_path)


def test_only_http_urls(tmp_path):
    with pytest.raises(DownloadError, match="http"):
        download("ftp://example.org/x.zip", tmp_path / "x.zip", sha256=SHA)


def test_unsafe_archive_paths_are_refused(server, tmp_path):
    evil = _zip_bytes({"ok.txt": b"x", "../escaped.txt": b"y"})
    server.files["/evil.zip"] = evil
    with pytest.raises(DataError, match="unsafe path"):
        _fetch(f"{server.url}/evil.zip", tmp_path, sha256=hashlib.sha256(evil).hexdigest())
    assert not (tmp_path / "raw" / "escaped.txt").exists()
    _assert_no_output(tmp_path)


def test_a_file_that_is_no_archive(server, tmp_path):
    server.files["/plain.bin"] = b"just bytes"
    with pytest.raises(DataError, match="not a zip or tar archive"):
        _fetch(f"{server.url}/plain.bin", tmp_path, sha256=hashlib.sha256(b"just bytes").hexdigest())
    _assert_no_output(tmp_path)


# ----------------------------------------------------------------------------- local sources
def _layout_dir(where: Path) -> Path:
    for name, data in LAYOUT.items():
        p = where / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return where / "ACDC"


def test_a_relative_path_is_taken_from_the_workflow_root(tmp_path):
    _layout_dir(tmp_path / "shared")
    wf = tmp_path / "wf"
    wf.mkdir()
    rec = fetch("acdc", {"layout": "slices", "path": "../shared/ACDC"}, wf / "results" / "raw" / "acdc",
                root=wf)
    assert rec["source"]["path"] == str((tmp_path / "shared" / "ACDC").resolve())
    assert (wf / "results" / "raw" / "acdc" / "data" / "blob.bin").is_file()


def test_a_missing_local_source_says_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError) as err:
        fetch("acdc", {"layout": "slices", "path": "../nowhere/ACDC"}, tmp_path / "raw" / "acdc",
              how_to_get=HOWTO, root=tmp_path)
    msg = str(err.value)
    assert "does not exist" in msg and "from the workflow directory" in msg and HOWTO in msg
    _assert_no_output(tmp_path)


def test_a_local_archive_is_checked_and_unpacked(tmp_path):
    archive = tmp_path / "ACDC.tar.gz"
    archive.write_bytes(_tgz_bytes(LAYOUT))
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    fetch("acdc", {"layout": "slices", "path": str(archive), "sha256": good}, tmp_path / "raw" / "acdc")
    assert (tmp_path / "raw" / "acdc" / "train.list").is_file()
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("acdc", {"layout": "slices", "path": str(archive), "sha256": "f" * 64}, tmp_path / "raw" / "acdc")
    _assert_no_output(tmp_path)


def test_a_source_with_both_path_and_url_is_refused(tmp_path):
    with pytest.raises(DataError, match="both a path and a url"):
        fetch("acdc", {"layout": "slices", "path": "x", "url": "http://127.0.0.1/x.zip"}, tmp_path / "acdc")


def test_acdc_raw_gets_the_shipped_split_lists(tmp_path):
    release = tmp_path / "database" / "training" / "patient001"
    release.mkdir(parents=True)
    (release / "Info.cfg").write_text("ED: 1\nES: 12\n")
    rec = fetch("acdc", {"layout": "acdc_raw", "path": str(tmp_path / "database")}, tmp_path / "raw" / "acdc",
                root=REPO)
    out = tmp_path / "raw" / "acdc"
    for name in ("train.list", "val.list", "test.list"):
        assert (out / name).read_text() == (REPO / "config" / "datasets" / "acdc_splits" / name).read_text()
        assert name in rec["files"]  # checksummed with the data
    assert rec["source"]["splits"].endswith("config/datasets/acdc_splits")


# ----------------------------------------------------------------------------- the user's source is read-only
def _snapshot(tree: Path) -> dict[str, tuple]:
    """Every entry below `tree` (itself included): bytes' digest, mtime, mode and inode."""
    out = {}
    for p in [tree, *sorted(tree.rglob("*"))]:
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(tree))] = (digest, st.st_mtime_ns, st.st_mode, st.st_ino)
    return out


def _local_source(layout: str, where: Path) -> Path:
    """A small source folder in `layout` (every layout the fetch stage copies from a folder)."""
    from semiseg.data.synthetic import write_synthetic2d, write_synthetic3d

    if layout == "nnunet":
        from nnunet_data import write_v2

        return write_v2(where)
    if layout == "slices":
        return write_synthetic2d(where, seed=1, n_train=2, n_val=1, n_test=1, slices=(2, 3), size=(32, 32))
    train, test = (_shipped_la("train")[:1], _shipped_la("test")[:1])  # LA copies keep the protocol's lists
    if layout == "la":
        out = write_synthetic3d(where, seed=1, n_train=1, n_test=1, shape=(16, 16, 16))
        from semiseg.data.layouts import LA_IMAGE_DIR

        for role, ids in (("train", train), ("test", test)):
            old = (out / f"{role}.list").read_text().split()
            (out / LA_IMAGE_DIR / old[0]).rename(out / LA_IMAGE_DIR / ids[0])
            (out / f"{role}.list").write_text(ids[0] + "\n")
        return out
    if layout == "la_raw":
        import SimpleITK as sitk

        for case in train + test:
            image = np.random.default_rng(0).integers(200, 400, (12, 120, 120)).astype(np.uint16)
            mask = np.zeros_like(image, np.uint8)
            mask[4:8, 50:70, 50:70] = 255
            for name, array in (("lgemri.nrrd", image), ("laendo.nrrd", mask)):
                (where / "Training Set" / case).mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(sitk.GetImageFromArray(array), str(where / "Training Set" / case / name))
        (where / "train.list").write_text("\n".join(train) + "\n")
        (where / "test.list").write_text("\n".join(test) + "\n")
        return where
    if layout == "acdc_raw":
        from test_acdc import _tiny_release

        release = _tiny_release(where)  # with its own three split lists
        return release
    return _local_release_source(layout, where)


def _local_release_source(layout: str, where: Path) -> Path:
    """The BraTS, Pancreas-CT and AbdomenCT-1K layouts, from the stand-in release writers."""
    import h5py

    import release_files as rf

    first = lambda name, role: (REPO / "config" / "datasets" / name / f"{role}.list").read_text().split()[:1]  # noqa: E731
    if layout == "brats_raw":
        rf.write_brats_release(where, ["B_1", "C_1"])
        rf.write_lists(where, train=["B_1"], val=[], test=["C_1"])
    elif layout in ("pancreas_raw", "pancreas_coranet_raw"):
        rf.write_pancreas_release(where, [1, 2])
        rf.write_lists(where, train=["image0001"], test=["image0002"])
    elif layout == "abdomenct1k_raw":
        rf.write_abdomen_release(where, [1, 2])
        rf.write_lists(where, train=["Case_00001"], test=["Case_00002"])
    elif layout in ("brats", "pancreas"):  # h5 copies: their lists must start as the protocol's
        splits = "brats_splits" if layout == "brats" else "pancreas_splits"
        roles = ("train", "val", "test") if layout == "brats" else ("train", "test")
        lists = {role: first(splits, role) for role in roles}
        folder = where / ("data" if layout == "brats" else "Pancreas_h5")
        folder.mkdir(parents=True)
        for i, case in enumerate(c for ids in lists.values() for c in ids):
            image, label = rf.brats_case(i, (16, 16, 16))
            name = f"{case}.h5" if layout == "brats" else f"{case}_norm.h5"
            with h5py.File(folder / name, "w") as h5:
                h5["image"], h5["label"] = image.astype(np.float32), (label > 0).astype(np.uint8)
        rf.write_lists(where, **lists)
    else:
        raise AssertionError(layout)
    return where


def _shipped_la(role: str) -> list[str]:
    return (REPO / "config" / "datasets" / "la_splits" / f"{role}.list").read_text().split()


def test_every_local_layout_is_a_source_the_fetch_stage_copies_from():
    from semiseg.data.preprocess import READERS

    generated = {"synthetic2d", "synthetic3d"}
    # the layouts the next test covers
    assert set(READERS) - generated == {"slices", "la", "la_raw", "acdc_raw", "brats_raw", "brats", "pancreas_raw",
                                        "pancreas_coranet_raw", "pancreas", "abdomenct1k_raw", "nnunet"}


@pytest.mark.parametrize("layout, dims", [("slices", 2), ("la", 3), ("la_raw", 3), ("acdc_raw", 2), ("brats_raw", 3),
                                          ("brats", 3), ("pancreas_raw", 3), ("pancreas_coranet_raw", 3),
                                          ("pancreas", 3), ("abdomenct1k_raw", 2), ("nnunet", 3)])
def test_fetch_and_preprocess_never_write_into_the_source(tmp_path, layout, dims):
    from semiseg.data.preprocess import preprocess

    src = _local_source(layout, tmp_path / "user" / "data")
    root = src if layout != "acdc_raw" else src.parent
    before = _snapshot(root)
    raw = tmp_path / "wf" / "results" / "raw" / "ds"
    fetch("ds", {"layout": layout, "path": str(src)}, raw, root=REPO)
    labels = ({"background": 0, "core": 1, "rim": 2} if layout == "nnunet"
              else {"background": 0, "fg": 1} if layout in ("la", "la_raw") or layout.startswith(("brats", "pancreas"))
              else {"background": 0, "a": 1, "b": 2, "c": 3, "d": 4} if layout == "abdomenct1k_raw"
              else {"background": 0, "RV": 1, "Myo": 2, "LV": 3})
    preprocess("ds", layout, raw, labels=labels, dims=dims, store_path=tmp_path / "wf" / "store.h5",
               **({"params": {"channel": 0, "split": {"fold": 0}}} if layout == "nnunet" else {}))
    # a later write into the results' copy (a tool, a user, a re-fetch) must not reach the source either
    for p in raw.rglob("*"):
        if p.is_file():
            assert p.stat().st_nlink == 1, f"{p} shares its inode with another file"
            with open(p, "ab") as fh:
                fh.write(b"x")
    assert _snapshot(root) == before


def test_an_acdc_raw_source_with_only_some_split_lists_is_refused_and_left_alone(tmp_path):
    release = tmp_path / "database"
    (release / "training" / "patient001").mkdir(parents=True)
    (release / "training" / "patient001" / "Info.cfg").write_text("ED: 1\nES: 12\n")
    (release / "train.list").write_text("patient001\n")  # the user's own, without val/test lists
    before = _snapshot(release)
    with pytest.raises(DataError, match=r"has train\.list but not val\.list, test\.list.*all its split lists or "
                                        r"none"):
        fetch("acdc", {"layout": "acdc_raw", "path": str(release)}, tmp_path / "raw" / "acdc", root=REPO)
    assert _snapshot(release) == before
    assert (release / "train.list").read_text() == "patient001\n"
    _assert_no_output(tmp_path)


# ----------------------------------------------------------------------------- symbolic links in a source
def test_links_inside_the_source_are_copied_as_files(tmp_path):
    src = _layout_dir(tmp_path / "shared")
    (src / "data" / "alias.bin").symlink_to("blob.bin")
    (src / "more").symlink_to("data", target_is_directory=True)
    out = tmp_path / "raw" / "acdc"
    rec = fetch("acdc", {"layout": "slices", "path": str(src)}, out)
    for rel in ("data/alias.bin", "more/blob.bin"):
        assert not (out / rel).is_symlink() and (out / rel).read_bytes() == (src / "data" / "blob.bin").read_bytes()
        assert rel in rec["files"]


@pytest.mark.parametrize("make, match", [
    (lambda src, tmp: (src / "data" / "secret").symlink_to(tmp / "outside.txt"),
     r"data/secret: symbolic link to \S+outside\.txt, outside the source"),
    (lambda src, tmp: (src / "data" / "gone").symlink_to(src / "data" / "nothing.bin"),
     r"data/gone: symbolic link to '\S+nothing\.bin', which does not exist \(a dangling link\)"),
    (lambda src, tmp: ((src / "a").symlink_to(src / "b"), (src / "b").symlink_to(src / "a")),
     r"/a: symbolic link loop"),
    (lambda src, tmp: (src / "data" / "up").symlink_to(src, target_is_directory=True),
     r"data/up: symbolic link loop: it leads back to"),
], ids=["outside", "dangling", "loop", "ancestor"])
def test_links_leaving_the_source_dangling_or_looping_are_refused_by_name(tmp_path, make, match):
    src = _layout_dir(tmp_path / "shared")
    (tmp_path / "outside.txt").write_text("not yours to copy")
    make(src, tmp_path)
    with pytest.raises(DataError, match=match):
        fetch("acdc", {"layout": "slices", "path": str(src)}, tmp_path / "raw" / "acdc")
    _assert_no_output(tmp_path)


# ----------------------------------------------------------------------------- progress and a full disk
def test_a_download_prints_newline_terminated_progress_when_not_on_a_terminal(server, tmp_path):
    stream = io.StringIO()
    big = bytes(range(256)) * (3 * 4096)  # 3 MB: three 1 MB chunks
    server.files["/big.bin"] = big
    dest = download(f"{server.url}/big.bin", tmp_path / "big.bin", sha256=hashlib.sha256(big).hexdigest(),
                    retries=0, timeout=5.0, progress=stream, progress_interval=0.0)
    assert dest.read_bytes() == big
    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) >= 3 and all(line.endswith("\n") and "\r" not in line for line in lines)
    assert re.fullmatch(r"download big\.bin: 3\.0 of 3\.0 MB \(100 %\), [\d.]+ MB/s\n", lines[-1])


def test_a_full_disk_during_a_local_copy_is_one_message_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import shutil as _shutil

    src = _layout_dir(tmp_path / "shared")
    real = _shutil.copyfile
    calls = []

    def full(a, b, *args, **kw):
        calls.append(b)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(b))
        return real(a, b, *args, **kw)

    monkeypatch.setattr(_shutil, "copyfile", full)
    with pytest.raises(OSError, match=r"^no space left on \S+/raw, needed about 2 MB \(writing acdc\)"):
        fetch("acdc", {"layout": "slices", "path": str(src)}, tmp_path / "raw" / "acdc")
    _assert_no_output(tmp_path)


def test_a_generation_killed_half_way_leaves_one_temporary_that_the_next_fetch_replaces(tmp_path):
    """A generator crashed by a full disk (HDF5 may abort the process) used to leave its own
    temporary, `..syn.partial.partial`, beside the fetch's: every temporary of a fetch now lives
    inside its one `.syn.partial`, which the next attempt replaces whole."""
    import subprocess
    import sys

    source = {"layout": "synthetic2d", "seed": 0,
              "params": {"n_train": 2, "n_val": 1, "n_test": 1, "slices": [2, 2], "size": [32, 32]}}
    crash = ("import os, sys\n"
             "import semiseg.data.synthetic.cardiac as cardiac\n"
             "from semiseg.data.fetch import fetch\n"
             "real, calls = cardiac.write_h5, []\n"
             "def crashing(*args, **kwargs):\n"
             "    calls.append(1)\n"
             "    if len(calls) > 2:\n"
             "        os._exit(134)\n"
             "    return real(*args, **kwargs)\n"
             "cardiac.write_h5 = crashing\n"
             f"fetch('syn', {source!r}, {str(tmp_path / 'raw' / 'syn')!r})\n")
    assert subprocess.run([sys.executable, "-c", crash], timeout=300).returncode == 134
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [".syn.partial"]
    fetch("syn", source, tmp_path / "raw" / "syn")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["syn"]
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.name.endswith((".partial", ".tmp"))]
