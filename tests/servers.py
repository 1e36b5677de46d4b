"""Real servers on 127.0.0.1 for remote-source tests: a Range-capable HTTP server and S3.

- :class:`RangeServer`: a small threaded HTTP/1.1 file server that answers ``HEAD`` and
  single-range ``GET`` (``206 Partial Content``, what GDAL's ``/vsicurl/`` asks for), optionally
  behind basic auth, and counts requests and bytes per file so tests and the benchmark can
  report requests per tile.
- :func:`s3_server`: moto's S3-compatible server (``ThreadedMotoServer``) with GDAL pointed at
  it through ``AWS_S3_ENDPOINT``, ``AWS_HTTPS=NO``, ``AWS_VIRTUAL_HOSTING=FALSE`` and dummy keys.

Both are pytest fixtures here; they start on a free port and stop when the test ends.
"""

from __future__ import annotations

import base64
import collections
import functools
import re
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RangeServer", "S3Server", "http_server", "plain_http_server", "s3_server"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Counter:
    """Requests and bytes served, per path."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    nbytes: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, size: int) -> None:
        with self.lock:
            self.requests[path] += 1
            self.nbytes[path] += size

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.nbytes.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet (pytest treats stray output as noise)."""

    def _file(self) -> Path | None:
        if self.server.auth is not None:
            expected = "Basic " + base64.b64encode(self.server.auth.encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._empty(401)
                return None
        relative = self.path.split("?", 1)[0].lstrip("/")
        path = (self.server.root / relative).resolve()
        if self.server.root not in path.parents or not path.is_file():
            self._empty(404)
            return None
        return path

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        if not self.server.head:  # like an object store URL signed for GET only
            self._empty(403)
            return
        path = self._file()
        if path is None:
            return
        self.server.counter.add(self.path, 0)
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        path = self._file()
        if path is None:
            return
        size = path.stat().st_size
        header = self.headers.get("Range")
        start, stop, status = 0, size, 200
        if header:
            match = _RANGE.match(header.strip())
            if match is None:  # multi-range: not offered (GDAL then asks range by range)
                self._empty(416)
                return
            first, last = match.groups()
            if first == "":
                start = max(0, size - int(last))
            else:
                start = int(first)
                stop = min(size, int(last) + 1) if last else size
            if start >= size:
                self._empty(416)
                return
            status = 206
        with path.open("rb") as handle:
            handle.seek(start)
            body = handle.read(stop - start)
        self.server.counter.add(self.path, len(body))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        self.wfile.write(body)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up (GDAL drops a connection after a failed read)."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)


class _Server(_QuietServer):
    root: Path
    counter: Counter
    auth: str | None
    head: bool


class RangeServer:
    """Serve the files of ``root`` on ``http://127.0.0.1:PORT/`` from a background thread.

    Parameters
    ----------
    root
        Directory whose files are served.
    auth
        ``"user:password"`` to require basic auth.
    head
        Answer ``HEAD`` requests (False: refuse them with 403, as a URL signed for GET does).
    """

    def __init__(self, root: Path, auth: str | None = None, head: bool = True) -> None:
        self.root = Path(root).resolve()
        self.counter = Counter()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.root = self.root
        self._server.counter = self.counter
        self._server.auth = auth
        self._server.head = head
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        """URL of a file under ``root``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> RangeServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[RangeServer]:
    """A Range-capable HTTP server over ``tmp_path / "www"`` (copy files there)."""
    root = tmp_path / "www"
    root.mkdir()
    server = RangeServer(root).start()
    try:
        yield server
    finally:
        server.stop()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture
def plain_http_server(tmp_path: Path) -> Iterator[str]:
    """``python -m http.server`` over ``tmp_path / "plain"``: no Range support; yields its URL.

    The standard library's file server answers every ``GET`` with the whole file (200), as
    many simple servers do; GDAL cannot read windows from it.
    """
    root = tmp_path / "plain"
    root.mkdir()
    handler = functools.partial(_QuietFiles, directory=str(root))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Server:
    """A running moto S3 server and a boto3 client for it."""

    endpoint: str
    client: Any

    def put(self, bucket: str, key: str, path: Path) -> str:
        """Upload ``path`` as ``s3://bucket/key`` (the bucket is created when missing)."""
        existing = {item["Name"] for item in self.client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            self.client.create_bucket(Bucket=bucket)
        self.client.upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"


_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_HTTPS": "NO",
    "AWS_VIRTUAL_HOSTING": "FALSE",
    "AWS_NO_SIGN_REQUEST": "NO",
}


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, with the environment GDAL and boto3 read set for it.

    The environment (not a GDAL option) carries the endpoint and dummy keys, exactly as a user
    points gigaseg at MinIO or another S3-compatible store; subprocesses inherit it.
    """
    moto_server = pytest.importorskip("moto.server")
    import boto3

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"127.0.0.1:{port}"
    for key, value in {**_S3_ENV, "AWS_S3_ENDPOINT": endpoint}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield S3Server(endpoint, client)
    finally:
        server.stop()


def copy_to(server_root: Path, source: Path, name: str | None = None) -> Path:
    """Copy ``source`` under a served directory; return the copy."""
    target = server_root / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
