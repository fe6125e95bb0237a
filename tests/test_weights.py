"""Named checkpoints: table lookup, local folders, cache and download (all offline, 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from lbnet_deploy import weights
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.weights import NamedModel

from .conftest import WEIGHTS

SHARED_WEIGHTS = WEIGHTS

PAYLOAD = b"not really a checkpoint\n" * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAKE_PATH = "test_model/Fake/Fake-X2.pt"


@dataclass
class Server:
    root: Path  # served folder; base_url is its subfolder "base", like ".../IVIPLab/LBNet/main"
    base_url: str
    paths: list[str] = field(default_factory=list)  # one entry per request received

    def put(self, rel: str, data: bytes) -> None:
        dest = self.root / "base" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, server_state: Server, **kwargs) -> None:
        self.server_state = server_state
        super().__init__(*args, directory=str(server_state.root), **kwargs)

    def do_GET(self) -> None:
        self.server_state.paths.append(self.path)
        if self.path.endswith("/truncated.pt"):
            # Promise more than is sent, then close: a connection dropped mid-download.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD) * 2))
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    state = Server(root=root, base_url="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, server_state=state))
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    state.base_url = f"http://127.0.0.1:{port}/base"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate every location resolve_weights reads; returns the cache root."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LBNET_CACHE_DIR", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LBNET_WEIGHTS_DIR", raising=False)
    # Nothing listens on the discard port: a stray download fails fast instead of going online.
    monkeypatch.setenv("LBNET_WEIGHTS_URL", "http://127.0.0.1:9/nowhere")
    return cache


def use_table(monkeypatch: pytest.MonkeyPatch, *models: NamedModel) -> None:
    monkeypatch.setattr(weights, "NAMED_MODELS", tuple(models))


def fake(sha256: str | None = PAYLOAD_SHA, path: str = FAKE_PATH) -> NamedModel:
    return NamedModel("fake-x2", "LBNet", 2, path, sha256)


def cache_listing(cache: Path) -> list[str]:
    root = cache / "weights"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


# --- the table ---------------------------------------------------------------------------------


def test_table_names_are_unique_and_files_are_upstream_basenames() -> None:
    models = weights.named_models()
    names = [m.name for m in models]
    assert len(set(names)) == len(names)
    assert {m.name for m in models} >= {"lbnet-x2", "lbnet-x4", "lbnet-t-x3", "lbnet-t-x4"}
    assert weights.get_named_model("lbnet-t-x3").upstream_path == "test_model/LBNet-T_X3.pt"
    assert weights.get_named_model("LBNet-T-X3").filename == "LBNet-T_X3.pt"
    assert weights.get_named_model("lbnet-x4").sha256 is None
    for m in models:
        assert m.name.endswith(f"x{m.scale}")
        assert m.sha256 is None or len(m.sha256) == 64


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(LBNetError) as info:
        weights.get_named_model("lbnet-x5")
    msg = str(info.value)
    assert "\n" not in msg
    assert "lbnet-x5" in msg
    for m in weights.named_models():
        assert m.name in msg


def test_resolve_unknown_name_is_an_error(env: Path) -> None:
    with pytest.raises(LBNetError, match="known names"):
        weights.resolve_weights("nope", progress=False)


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LBNET_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert weights.weights_cache_dir() == tmp_path / "home/.cache/lbnet-deploy/weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty means unset
    assert weights.weights_cache_dir() == tmp_path / "home/.cache/lbnet-deploy/weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.weights_cache_dir() == tmp_path / "xdg/lbnet-deploy/weights"
    monkeypatch.setenv("LBNET_CACHE_DIR", str(tmp_path / "mine"))
    assert weights.weights_cache_dir() == tmp_path / "mine/weights"


def test_default_url_is_upstream_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LBNET_WEIGHTS_URL", raising=False)
    assert weights.weights_url(weights.get_named_model("lbnet-t-x3")) == (
        "https://raw.githubusercontent.com/IVIPLab/LBNet/main/test_model/LBNet-T_X3.pt"
    )
    monkeypatch.setenv("LBNET_WEIGHTS_URL", "http://example.invalid/x/")
    assert weights.weights_url(weights.get_named_model("lbnet-x2")) == (
        "http://example.invalid/x/test_model/LBNet/LBNet-X2.pt"
    )


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # spans several chunks
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert weights.sha256_file(f) == hashlib.sha256(data).hexdigest()


# --- download ----------------------------------------------------------------------------------


def test_download_lands_in_cache_and_is_reused(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(monkeypatch, fake())
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)
    server.put(FAKE_PATH, PAYLOAD)

    path = weights.resolve_weights("fake-x2", progress=False)
    assert path == env / "weights" / "Fake-X2.pt"
    assert path.read_bytes() == PAYLOAD
    assert server.paths == [f"/base/{FAKE_PATH}"]
    assert cache_listing(env) == ["Fake-X2.pt"]  # no temp leftovers

    assert weights.resolve_weights("fake-x2", progress=False) == path
    assert len(server.paths) == 1  # served from the cache, verified by hash


def test_download_shows_progress_on_stderr(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_table(monkeypatch, fake())
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)
    server.put(FAKE_PATH, PAYLOAD)
    weights.resolve_weights("fake-x2", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Fake-X2.pt" in captured.err


def test_wrong_hash_download_is_rejected_and_not_cached(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(monkeypatch, fake(sha256="0" * 64))
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)
    server.put(FAKE_PATH, PAYLOAD)

    with pytest.raises(LBNetError) as info:
        weights.resolve_weights("fake-x2", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "fake-x2" in msg and "0" * 64 in msg and PAYLOAD_SHA in msg
    assert cache_listing(env) == []


def test_http_404_is_an_error_naming_the_url(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(monkeypatch, fake())
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)

    with pytest.raises(LBNetError) as info:
        weights.resolve_weights("fake-x2", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{server.base_url}/{FAKE_PATH}" in msg
    assert "404" in msg
    assert cache_listing(env) == []


def test_connection_refused_is_an_error_naming_the_url_and_the_offline_way(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Take a free port and release it: nothing listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    use_table(monkeypatch, fake())
    monkeypatch.setenv("LBNET_WEIGHTS_URL", f"http://127.0.0.1:{port}")

    with pytest.raises(LBNetError) as info:
        weights.resolve_weights("fake-x2", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"http://127.0.0.1:{port}/{FAKE_PATH}" in msg
    assert "LBNET_WEIGHTS_DIR" in msg  # the offline user's way out
    assert cache_listing(env) == []


def test_a_relative_weights_dir_that_misses_is_named_resolved_in_the_offline_error(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # README's command sets LBNET_WEIGHTS_DIR=../shared/weights; after a cd it names nothing.
    use_table(monkeypatch, fake())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", "../shared/weights")
    with pytest.raises(LBNetError) as info:
        weights.resolve_weights("fake-x2", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "LBNET_WEIGHTS_DIR=../shared/weights" in msg
    assert str(tmp_path / "shared" / "weights") in msg  # where it was looked for


def test_truncated_download_leaves_no_partial_file(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(monkeypatch, fake(path="test_model/truncated.pt"))
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)

    with pytest.raises(LBNetError, match="cannot download"):
        weights.resolve_weights("fake-x2", progress=False)
    assert cache_listing(env) == []


def test_unknown_hash_downloads_with_a_warning_showing_the_hash(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lbnet_deploy.logs import configure_logging

    configure_logging()  # as the CLI does; else pytest's log capture takes the warning
    use_table(monkeypatch, fake(sha256=None))
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)
    server.put(FAKE_PATH, PAYLOAD)

    path = weights.resolve_weights("fake-x2", progress=False)
    assert path.read_bytes() == PAYLOAD
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1
    assert "not known" in err_lines[0] and PAYLOAD_SHA in err_lines[0]


def test_corrupted_cache_file_is_downloaded_again(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(monkeypatch, fake())
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)
    server.put(FAKE_PATH, PAYLOAD)
    cached = env / "weights" / "Fake-X2.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD[:100])  # truncated earlier copy

    assert weights.resolve_weights("fake-x2", progress=False) == cached
    assert cached.read_bytes() == PAYLOAD
    assert len(server.paths) == 1
    assert cache_listing(env) == ["Fake-X2.pt"]


# --- LBNET_WEIGHTS_DIR -------------------------------------------------------------------------


def test_weights_dir_wrong_hash_names_file_and_both_hashes(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(monkeypatch, fake(sha256="0" * 64))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Fake-X2.pt").write_bytes(PAYLOAD)
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", str(mine))

    with pytest.raises(LBNetError) as info:
        weights.resolve_weights("fake-x2", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(mine / "Fake-X2.pt") in msg and "0" * 64 in msg and PAYLOAD_SHA in msg
    assert (mine / "Fake-X2.pt").read_bytes() == PAYLOAD  # the user's file is left alone


def test_weights_dir_missing_file_falls_back_to_download(
    env: Path, tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_table(monkeypatch, fake())
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)
    server.put(FAKE_PATH, PAYLOAD)
    assert weights.resolve_weights("fake-x2", progress=False) == env / "weights" / "Fake-X2.pt"


@pytest.mark.skipif(
    not SHARED_WEIGHTS.is_dir(),
    reason=f"real checkpoints not found at {SHARED_WEIGHTS} (set LBNET_SHARED_DIR)",
)
def test_weights_dir_finds_and_verifies_real_checkpoints(
    env: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", str(SHARED_WEIGHTS))
    monkeypatch.setenv("LBNET_WEIGHTS_URL", server.base_url)  # counts any attempt to download
    present = [
        m
        for m in weights.named_models()
        if m.sha256 is not None and (SHARED_WEIGHTS / m.filename).is_file()
    ]
    if not present:
        pytest.skip(f"no named checkpoint with a known hash in {SHARED_WEIGHTS}")
    for m in present:
        path = weights.resolve_weights(m.name, progress=False)
        assert path == SHARED_WEIGHTS / m.filename
        assert weights.sha256_file(path) == m.sha256
    assert server.paths == []
    assert cache_listing(env) == []
