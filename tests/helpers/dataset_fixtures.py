"""Shared pieces of the dataset tests: archives built from the real fixtures in ../shared/data,
a test-only registry, and a small HTTP server on 127.0.0.1 that honours Range requests and can
drop the connection part-way through a transfer."""
from __future__ import annotations

import hashlib
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from benchmark.datasets import transfer

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
# PNG encoding of the larger fixtures (DID-MDN sample 3 is 4800x1639) is slow; tests use the small ones.
BIG_DIDMDN = ("2.jpg", "3.jpg", "4.jpg", "8.jpg")
BIG_INTERNET = tuple(f"{i}.jpg" for i in range(9, 21))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sums(folder: str) -> dict[str, str]:
    """The fixture's SHA256SUMS as {relative path: sha256}."""
    lines = (SHARED / folder / "SHA256SUMS").read_text().split("\n")
    return {p.removeprefix("./"): d for d, p in (ln.split() for ln in lines if ln.strip())}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and srv.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = srv.cut_first.pop(self.path, None)
        if cut is not None:  # simulate a dropped connection: half the body, then hang up
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(transfer, "RETRY_DELAY_S", 0.0)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.cut_first, srv.honour_range = {}, [], {}, True
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def make_zip(folder: str, out: Path, top: str, skip: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted((SHARED / folder).rglob("*")):
            if f.is_file() and f.name != "SHA256SUMS" and f.name not in skip:
                zf.write(f, f"{top}/{f.relative_to(SHARED / folder).as_posix()}")
    return out


def make_tar(folder: str, out: Path, top: str, mode: str = "w:gz") -> Path:
    with tarfile.open(out, mode, **({"compresslevel": 1} if mode.endswith("gz") else {})) as tf:
        tf.add(SHARED / folder, arcname=top, filter=lambda ti: None if ti.name.endswith("SHA256SUMS") else ti)
    return out


def registry(tmp_path: Path, key: str, **entry) -> Path:
    """A test-only registry: real layouts, fixture-sized counts (the real spec stays untouched)."""
    entry.setdefault("source", "download")
    entry.setdefault("title", key)
    entry.setdefault("manual", "Fetch it by hand from https://example.invalid/page.")
    path = tmp_path / f"reg-{key}.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "datasets": {key: entry}}))
    return path


def serve(server, archive: Path) -> str:
    server.files["/" + archive.name] = archive.read_bytes()
    return server.url("/" + archive.name)


def rain100l_registry(tmp_path, url=None, sha256=None, count=20):
    return registry(tmp_path, "rain100l", source="download" if url else "manual", archives=[
        {"file": "Rain100L.zip", "urls": [url] if url else [], "sha256": sha256, "splits": ["test"]}],
        splits={"test": {"count": count, "locate": ["Rain100L", "*test*"]},
                "train": {"count": 200, "optional": True}})
