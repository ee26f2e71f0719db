"""Downloading bundles: an interrupted download is resumed with HTTP Range; sizes and free space bound it;
and ``massager update`` on the command line refuses with the reason and installs."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.update_bundle import UpdateRefused
from device.update_check import current_version, read_json, write_json
from device.update_fetch import download, partial_path
from tests.update_support import installer, make_bundle, tree, unit_with

REPO = Path(__file__).resolve().parent.parent


class Server:
    """An HTTP server of one file that honours Range and can cut a response short."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.cut_after: int | None = None  # bytes sent before the connection drops (next response only)
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
                body = server.data[start:]
                self.send_response(206 if wanted else 200)
                if wanted:
                    size = len(server.data)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/massager.bundle"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def serve() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.close()


def test_update_fetch_resumes_an_interrupted_download(tmp_path: Path, serve: list[Server]) -> None:
    data = os.urandom(300_000)
    server = Server(data)
    serve.append(server)
    server.cut_after = 100_000
    with pytest.raises(UpdateRefused) as caught:
        download(server.url, tmp_path)
    assert caught.value.code == "truncated" and "resumes" in caught.value.message
    assert partial_path(tmp_path, server.url).stat().st_size == 100_000  # kept for the next attempt
    done = download(server.url, tmp_path)
    assert done.read_bytes() == data
    assert server.ranges == [None, "bytes=100000-"]  # the second asked only for the rest


def test_update_fetch_is_bounded_by_size_and_free_space(tmp_path: Path, serve: list[Server]) -> None:
    server = Server(b"x" * 50_000)
    serve.append(server)
    with pytest.raises(UpdateRefused, match="is 50000 bytes; the limit is 40000"):
        download(server.url, tmp_path, max_bytes=40_000)
    with pytest.raises(UpdateRefused, match="the limit is 1000"):
        download(server.url, tmp_path, expected_size=1000)
    with pytest.raises(UpdateRefused, match="not enough space for the download"):
        download(server.url, tmp_path, free_bytes=lambda _p: 10_000)
    assert not any(tmp_path.iterdir())  # nothing was written


def test_update_from_a_url_after_a_dropped_connection(tmp_path: Path, key: Ed25519PrivateKey,
                                                      serve: list[Server]) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    bundle = make_bundle(tmp_path, key, "1.1.0")
    server = Server(bundle.read_bytes())
    serve.append(server)
    server.cut_after = 3000
    before = sorted(p.name for p in paths.releases.iterdir())
    with pytest.raises(UpdateRefused, match="the next attempt resumes it"):
        installer(paths).install(server.url)
    assert sorted(p.name for p in paths.releases.iterdir()) == before
    assert read_json(paths.result)["code"] == "truncated"
    assert installer(paths).install(server.url, expected_size=bundle.stat().st_size) == "1.1.0"
    assert current_version(paths) == "1.1.0"
    assert not any(paths.downloads.iterdir())  # the bundle is not kept once installed


def massager_update(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "device", "update", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def test_massager_update_cli_refuses_with_the_reason(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Refusals name their reason and change nothing (a forced downgrade installs: test_update.py; the
    command's own install, with a unit's venv and its pip, is the request test's below)."""
    paths = unit_with(tmp_path, key, "1.0.0")
    before = tree(paths.opt)
    proc = massager_update(make_bundle(tmp_path, Ed25519PrivateKey.generate(), "1.1.0"), "--root", paths.root)
    assert proc.returncode == 1 and "refused (key)" in proc.stderr and "not trusted" in proc.stderr
    proc = massager_update(make_bundle(tmp_path, key, "0.9.0"), "--root", paths.root)
    assert proc.returncode == 1 and "refused (downgrade)" in proc.stderr
    assert tree(paths.opt) == before and current_version(paths) == "1.0.0"


def test_massager_update_request_installs_what_the_firmware_was_asked(tmp_path: Path, key: Ed25519PrivateKey,
                                                                      serve: list[Server]) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    bundle = make_bundle(tmp_path, key, "0.9.0")  # a downgrade: over MQTT never forced
    server = Server(bundle.read_bytes())
    serve.append(server)
    write_json(paths.request, {"url": server.url, "bundle_size": bundle.stat().st_size})
    proc = massager_update("--request", "--force", "--root", paths.root, "--no-restart")
    assert proc.returncode == 1 and "refused (downgrade)" in proc.stderr
    assert not paths.request.exists()  # taken: it runs once
    assert read_json(paths.result)["code"] == "downgrade"  # what the firmware then publishes
    server.data = make_bundle(tmp_path, key, "1.1.0").read_bytes()
    write_json(paths.request, {"url": server.url, "bundle_size": len(server.data)})
    proc = massager_update("--request", "--root", paths.root, "--no-restart")
    assert proc.returncode == 0, proc.stderr
    assert current_version(paths) == "1.1.0" and read_json(paths.pending)["previous"] == "1.0.0"
    assert (paths.release("1.1.0") / "venv" / "bin" / "pip").exists()  # a unit's venvs carry their own pip
    assert massager_update("--request", "--root", paths.root).returncode == 0  # nothing asked: nothing done
