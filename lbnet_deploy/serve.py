"""A local Triton Inference Server for an image repository (`lbnet-deploy serve --triton`), from
the `tritonserver` binary inside the nvidia-pytriton wheel on PyPI (no container, no install).

Everything it needs is made once in the cache (`<cache>/triton/`):
- the wheel (NVIDIA_PYTRITON, downloaded with pip on first use, or the file given), unzipped, with
  the Python backend's stub for this Python copied where the backend looks for it;
- the Python backend's environment: a venv with numpy<2 (the wheel's stub was built against
  numpy 1: with numpy 2 responses arrive with their shape but no data), pillow, and the same
  onnxruntime (and openvino, where a tile model asks for it) version as this installation, so
  the server computes what `upscale` computes here bit for bit. Our own code travels inside
  the repository (export/triton.py).
The stub runs the `python` first on PATH, so the server starts with the venv's bin first.
The wheel's server has the Python backend only: a repository whose tile model is a TensorRT
plan or an ONNX Runtime platform model is refused (those run in NVIDIA's containers).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.weights import cache_root

log = logging.getLogger("lbnet_deploy")

NVIDIA_PYTRITON = "nvidia-pytriton==0.7.0"  # Triton 2.51 (NVIDIA's 24.10 containers)
WHEEL_GLOB = "nvidia_pytriton-0.7.0-*.whl"
STUB_VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")  # stubs in the wheel
PIP_TIMEOUT_S = 900
SHM = "/dev/shm"  # where the Python backend's shared-memory regions live (POSIX shm on Linux)


def triton_home() -> Path:
    """Where the server and its environment are kept: $LBNET_TRITON_DIR, else <cache>/triton
    (CI and the tests keep one across runs: 55 MB of wheel, 200 MB of environment)."""
    folder = os.environ.get("LBNET_TRITON_DIR")
    return Path(folder) if folder else cache_root() / "triton"


# what pip says where it reaches no package index (offline, a firewall, no DNS)
UNREACHABLE = (
    "from versions: none", "NewConnectionError", "Failed to establish a new connection",
    "Temporary failure in name resolution", "Network is unreachable", "ProxyError",
)  # fmt: skip


def _pip(args: Sequence[str], python: str = sys.executable, offline: str = "") -> None:
    """pip, the ordinary client, with its last line of output as the one-line error, and
    `offline` (what to do instead) added where pip found no package index."""
    command = [python, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise LBNetError(f"pip {args[0]} took over {PIP_TIMEOUT_S} s") from None
    if done.returncode:
        text = done.stderr + done.stdout
        lines = [ln for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln] or lines or ["no output"]
        cause = errors[-1].strip()
        if offline and any(marker in text for marker in UNREACHABLE):
            cause = f"{cause}: no package index reachable from here? {offline}"
        raise LBNetError(f"pip {args[0]} {' '.join(a for a in args[1:] if not a.startswith('-'))} "
                         f"failed: {cause}")  # fmt: skip


def obtain_wheel(wheel: str | Path | None = None) -> Path:
    """The nvidia-pytriton wheel: the file given (or $LBNET_PYTRITON_WHEEL), else the cached
    download, else downloaded now with pip (one line naming --wheel where that fails)."""
    given = wheel or os.environ.get("LBNET_PYTRITON_WHEEL")
    if given:
        path = Path(given)
        if not zipfile.is_zipfile(path):
            raise LBNetError(f"{path} is not the nvidia-pytriton wheel (not a zip file)")
        return path
    folder = triton_home() / "wheels"
    found = sorted(folder.glob(WHEEL_GLOB))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (55 MB, once) ...", NVIDIA_PYTRITON)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        try:
            _pip(["download", "--no-deps", "--only-binary=:all:", "--dest", tmp, NVIDIA_PYTRITON])
        except LBNetError as exc:
            raise LBNetError(
                f"cannot get Triton's server ({exc}); download {NVIDIA_PYTRITON} where PyPI is "
                "reachable and give it with --wheel PATH"
            ) from None
        (downloaded,) = Path(tmp).glob(WHEEL_GLOB)
        os.replace(downloaded, folder / downloaded.name)
    return folder / downloaded.name


def python_tag(python: str = sys.executable) -> str:
    """'3.11' for the interpreter the backend environment is made from."""
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def _made_once(target: Path, make) -> Path:  # make(tmp folder) fills it
    """`target` made whole by `make` in a temporary folder beside it and renamed into place,
    by one process at a time (a lock file beside it: another process waits, then finds it
    complete; without the lock, a second maker replaced a folder the first had just completed
    and a server was already running from)."""
    import fcntl  # POSIX: the wheel's server runs on Linux only

    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:  # released when closed
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process making %s ...", target)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            make(tmp)
            (tmp / ".complete").write_text("")
            shutil.rmtree(target, ignore_errors=True)  # an incomplete one (killed while made)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def unpacked_server(wheel: Path, version: str) -> Path:
    """The wheel unzipped once (per Python version of the stub), the stub in place."""
    if version not in STUB_VERSIONS:
        raise LBNetError(
            f"the wheel's Python backend has stubs for Python {', '.join(STUB_VERSIONS)}, "
            f"not {version}"
        )
    digest = hashlib.sha256(wheel.name.encode()).hexdigest()[:8]

    def make(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tmp)
        except (zipfile.BadZipFile, OSError) as exc:
            raise LBNetError(f"cannot unpack {wheel}: {exc}") from None
        server = tmp / "pytriton" / "tritonserver"
        stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise LBNetError(f"{wheel} has no Python {version} backend stub")
        shutil.copy2(stub, server / "backends" / "python" / stub.name)
        for binary in (server / "bin" / "tritonserver", server / "backends" / "python" / stub.name):
            binary.chmod(0o755)

    return _made_once(triton_home() / f"server-{digest}-py{version}", make)


def _version_of(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def env_requirements(runners: AbstractSet[str]) -> list[str]:
    """What the Python backend's environment installs: numpy<2 (the wheel's stub), pillow (our
    runtime's image module) and the runners' libraries at this installation's versions. Where
    only onnxruntime-gpu is installed here, the server gets the CPU package onnxruntime of the
    same version (the server runs on the CPU; its CPU kernels gave the same bits as
    onnxruntime-gpu's CPU provider, 1.31.1 here: README)."""
    ort = _version_of("onnxruntime", "onnxruntime-gpu")
    reqs = ["numpy<2", "pillow>=10", f"onnxruntime=={ort}" if ort else "onnxruntime"]
    if "openvino" in runners:
        ov = _version_of("openvino")
        reqs.append(f"openvino=={ov}" if ov else "openvino")
    return reqs


def backend_env(runners: AbstractSet[str], python: str = sys.executable) -> Path:
    """The Python backend's venv (made once per requirements and Python version)."""
    version = python_tag(python)
    reqs = env_requirements(runners)
    key = hashlib.sha256("\n".join([version, *reqs]).encode()).hexdigest()[:12]

    def make(tmp: Path) -> None:
        log.info("making Triton's Python environment (%s) in %s, once ...", ", ".join(reqs), tmp)
        done = subprocess.run([python, "-m", "venv", str(tmp)], capture_output=True, text=True)
        if done.returncode:
            raise LBNetError(f"cannot make a venv with {python}: {done.stderr.strip()[-200:]}")
        try:
            _pip(["install", *reqs], python=str(tmp / "bin" / "python"), offline=(
                "Run `lbnet-deploy serve --prepare` once where PyPI is reachable (it keeps the "
                "environment in $LBNET_TRITON_DIR, else the cache)"))  # fmt: skip
        except LBNetError as exc:
            gpu = _version_of("onnxruntime-gpu") if _version_of("onnxruntime") is None else None
            if gpu and f"onnxruntime=={gpu}" in str(exc):
                raise LBNetError(
                    f"{exc} (this installation has onnxruntime-gpu {gpu}; the server, on the "
                    "CPU, takes the CPU package onnxruntime at the same version, so that it "
                    "computes what upscale computes here)"
                ) from None
            raise

    return _made_once(triton_home() / f"env-py{version}-{key}", make)


def prepare(
    wheel: str | Path | None = None, runners: AbstractSet[str] = frozenset({"ort"})
) -> tuple[Path, Path]:
    """(the unpacked server, the Python backend's venv), made in triton_home() if missing."""
    server = unpacked_server(obtain_wheel(wheel), python_tag()) / "pytriton"  # checked first
    return server, backend_env(runners)


@dataclass(frozen=True)
class RepositoryFacts:
    runners: set[str]  # the runners its Python tile models run (ort, openvino)


def check_repository(repository: Path) -> RepositoryFacts:
    """Every folder of `repository` is a Python-backend model (what the wheel's server runs);
    one line naming the first that is not (a hidden or config-less folder too: Triton refuses
    to start on it), or a folder that is no repository."""
    if not repository.is_dir():
        raise LBNetError(f"model repository folder does not exist: {repository}")
    for folder in sorted(p for p in repository.iterdir() if p.is_dir()):
        # Triton loads every folder as a model, hidden ones too (a staging folder left by a
        # killed `triton` run), and refuses to start on one that is none
        hidden = folder.name.startswith(".")
        if hidden or not (folder / "config.pbtxt").is_file():
            what = "a hidden folder, which Triton loads as a model too" if hidden else "no model"
            raise LBNetError(
                f"{folder} is {what} (Triton would refuse to start): remove it from the repository"
            )
    configs = sorted(repository.glob("*/config.pbtxt"))
    if not configs:
        raise LBNetError(f"{repository} holds no model (no */config.pbtxt): write one with "
                         "`lbnet-deploy triton --images --cpu`")  # fmt: skip
    runners = set()
    for config in configs:
        text = config.read_text(errors="replace")
        platform = re.search(r'^\s*(platform|backend)\s*:\s*"([^"]*)"', text, re.M)
        if platform is None or platform.group(2) != "python":
            what = platform.group(2) if platform else "no backend"
            raise LBNetError(
                f"{config.parent.name} runs {what}; the nvidia-pytriton server runs Python-backend "
                "models only: write the repository with --images --cpu, or serve it in NVIDIA's "
                "container"
            )
        runner = re.search(r'key:\s*"backend"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text)
        runners.add(runner.group(1) if runner else "ort")
    return RepositoryFacts(runners)


# the prefix of Triton's (glog's) log lines: "E1203 10:28:05.730181 26488 server.cc:241] "
GLOG = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+\] ")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for tests and `--*-port 0`)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int, option: str) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise LBNetError(
                f"cannot listen on {host}:{port} ({exc.strerror}): choose another {option}"
            ) from None


@dataclass
class TritonServer:
    """tritonserver on `repository`, on `host` (loopback by default); a context manager that
    stops it (and its Python backend processes) on exit."""

    repository: Path
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    wheel: str | Path | None = None
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    # the Python backend's shared-memory regions (/dev/shm/<prefix>*): named per server, so
    # stop() removes what a killed server's stubs leave (1-3 MB each, every SIGKILL)
    shm_prefix: str = field(
        default_factory=lambda: f"lbnet_triton_{os.getpid()}_{secrets.token_hex(4)}_", init=False
    )

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment (made in the cache on first use)."""
        server, env_dir = prepare(self.wheel, check_repository(Path(self.repository)).runners)
        home = server / "tritonserver"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        libs = [str(server.parent / "nvidia_pytriton.libs"), str(home / "lib")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(
            ":"
        )
        command = [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={home / 'backends'}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",  # the statistics endpoint has the batch counts
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--exit-timeout-secs=10",
        ]  # fmt: skip
        return command, env

    def start(self, timeout_s: float = 300.0) -> TritonServer:
        """Start and wait until /v2/health/ready (every model loaded); one line on failure. The
        server runs in its own session (the terminal's Ctrl-C does not reach it), so whatever
        ends the wait (a failure, Ctrl-C, SIGTERM) stops it here before it propagates."""
        if self.grpc_port == self.http_port:
            raise LBNetError(
                f"--grpc-port and --http-port are both {self.grpc_port}: give two ports"
            )
        _check_port(self.host, self.grpc_port, "--grpc-port")
        _check_port(self.host, self.http_port, "--http-port")
        command, env = self.command()
        log_path = self.log_path or triton_home() / "logs" / f"server-{self.grpc_port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        try:
            with open(log_path, "wb") as out:
                # its own session: stop() ends the server and the backend processes it started
                self.process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            deadline = time.monotonic() + timeout_s
            while not self.ready():
                if self.process.poll() is not None:
                    raise LBNetError(
                        f"Triton stopped while loading: {self.failure()} (log: {log_path})"
                    )
                if time.monotonic() > deadline:
                    raise LBNetError(
                        f"Triton was not ready after {timeout_s:.0f} s (log: {log_path})"
                    )
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def failure(self) -> str:
        """Why the server stopped, from its log: the first model that failed to load, else the
        server's own "error: ..." line, else its last error line (not the "CudaDriverHelper has
        not been initialized." every start logs without a GPU), else a usage message's last
        line (Triton prints its usage for a bad command line)."""
        if self.log_path is None or not self.log_path.is_file():
            return "no log"
        lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines()]
        logged = [GLOG.sub("", ln).strip('"') for ln in lines if GLOG.match(ln)]
        errors = [GLOG.sub("", ln).strip('"') for ln in lines if ln.startswith("E")
                  and GLOG.match(ln) and "CudaDriverHelper" not in ln]  # fmt: skip
        found = (
            [ln for ln in logged if "failed to load" in ln]
            or [ln for ln in lines if ln.startswith("error:")]
            or errors[-1:]
            or ([] if logged else [ln for ln in lines if ln][-1:])
        )
        return found[0][:400] if found else "no error in its log"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (Triton unloads its models and exits), then SIGKILL to the whole group (also
        at once where the wait is interrupted: a second Ctrl-C)."""
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stubs left behind, by our group's id
            process.wait()
            self.process = None
            for region in Path(SHM).glob(f"{self.shm_prefix}*"):  # left where stubs were killed
                with contextlib.suppress(OSError):
                    region.unlink()

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()
