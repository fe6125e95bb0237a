"""Named LBNet checkpoints: where they come from, how they are verified, where they are cached.

The official checkpoints live in the upstream repository (IVIPLab/LBNet, branch main), which has
no licence file, so this project never ships them: `resolve_weights` finds a local copy or
downloads one for the user. Every name is one row of `NAMED_MODELS`; nothing below branches on a
particular model.

Lookup order for a name:
1. `$LBNET_WEIGHTS_DIR/<basename>` if that variable is set (a folder the user manages),
2. the user cache: `$LBNET_CACHE_DIR`, else `$XDG_CACHE_HOME/lbnet-deploy`, else
   `~/.cache/lbnet-deploy`, subfolder `weights/`,
3. a download from `$LBNET_WEIGHTS_URL` (default: upstream's raw files) into that cache.

Standard library and tqdm only: this module must import on a bare Jetson install.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from lbnet_deploy._version import __version__
from lbnet_deploy.errors import LBNetError

DEFAULT_WEIGHTS_URL = "https://raw.githubusercontent.com/IVIPLab/LBNet/main"
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20

log = logging.getLogger("lbnet_deploy")


@dataclass(frozen=True)
class NamedModel:
    """One official checkpoint: the name users type and the facts needed to fetch and check it."""

    name: str
    variant: str  # "LBNet" or "LBNet-T"
    scale: int
    upstream_path: str  # relative to the upstream repository root, POSIX separators
    sha256: str | None  # None: not known to lbnet-deploy, the file cannot be verified

    @property
    def filename(self) -> str:
        """Local file name: the upstream basename (the same in every lookup location)."""
        return PurePosixPath(self.upstream_path).name


NAMED_MODELS: tuple[NamedModel, ...] = (
    NamedModel(
        "lbnet-x2", "LBNet", 2, "test_model/LBNet/LBNet-X2.pt",
        "a8a51fd0fd46ccba7c0e6aaf3853917e8c13f453b8c0503208113cbf38da46a1",
    ),
    NamedModel(
        "lbnet-x3", "LBNet", 3, "test_model/LBNet/LBNet-X3.pt",
        "c0cb80ce8b25bd5abac552f1a46006042e2af075a53086cf453f74cae5563cad",
    ),
    # Exists upstream but was never obtained for this project, so its hash is unknown.
    NamedModel("lbnet-x4", "LBNet", 4, "test_model/LBNet/LBNet-X4.pt", None),
    NamedModel(
        "lbnet-t-x2", "LBNet-T", 2, "test_model/LBNet-T/LBNet-T_X2.pt",
        "ed97a13f40a9e92931642f08f9c6397ced0f1a2bc1cf3dbdaa8ba05caea3c6ea",
    ),
    # Upstream keeps this one at the root of test_model, not in test_model/LBNet-T.
    NamedModel(
        "lbnet-t-x3", "LBNet-T", 3, "test_model/LBNet-T_X3.pt",
        "d74c5f9a954173d962b6cec789c17f258f46af656f67dec46b4a60e8de1396e3",
    ),
    NamedModel(
        "lbnet-t-x4", "LBNet-T", 4, "test_model/LBNet-T/LBNet-T_X4.pt",
        "5e5c2475619523fda3efbf077b19c709571724a2b60780f8c73c61408d827366",
    ),
)  # fmt: skip


def named_models() -> tuple[NamedModel, ...]:
    """All named checkpoints, in table order."""
    return NAMED_MODELS


def is_model_name(spec: str | os.PathLike[str]) -> bool:
    """`lbnet-t-x4` is a name; anything with a suffix or a separator, or that exists, a path.
    The one rule every command uses to tell them apart."""
    text = str(spec)
    return not (Path(text).suffix or Path(text).exists() or os.sep in text)


def get_named_model(name: str) -> NamedModel:
    """The table row for `name` (case-insensitive); `LBNetError` listing the names otherwise."""
    key = name.strip().lower()
    for model in NAMED_MODELS:
        if model.name == key:
            return model
    known = ", ".join(m.name for m in NAMED_MODELS)
    raise LBNetError(f"unknown model name {name!r}; known names: {known}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _env(name: str) -> str | None:
    # An empty variable means "unset", as the XDG spec says for XDG_CACHE_HOME.
    value = os.environ.get(name, "")
    return value or None


def cache_root() -> Path:
    """`$LBNET_CACHE_DIR`, else `$XDG_CACHE_HOME/lbnet-deploy`, else `~/.cache/lbnet-deploy`."""
    explicit = _env("LBNET_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = _env("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lbnet-deploy"


def weights_cache_dir() -> Path:
    """Where downloaded checkpoints are kept (not created here)."""
    return cache_root() / "weights"


def weights_url(model: NamedModel) -> str:
    """Download URL: `$LBNET_WEIGHTS_URL` (default: upstream raw files) + the upstream path."""
    base = _env("LBNET_WEIGHTS_URL") or DEFAULT_WEIGHTS_URL
    return f"{base.rstrip('/')}/{model.upstream_path}"


def resolve_weights(name: str, *, progress: bool = True) -> Path:
    """Path of a verified local copy of the named checkpoint, downloading it if needed."""
    model = get_named_model(name)

    user_dir = _env("LBNET_WEIGHTS_DIR")
    if user_dir:
        candidate = Path(user_dir).expanduser() / model.filename
        if candidate.is_file():
            # The user owns this folder: report a mismatch rather than touch their file.
            if model.sha256 is not None:
                actual = sha256_file(candidate)
                if actual != model.sha256:
                    raise LBNetError(
                        f"{candidate} (from LBNET_WEIGHTS_DIR) does not match {model.name}: "
                        f"SHA-256 {actual}, expected {model.sha256}"
                    )
            return candidate

    cache_dir = weights_cache_dir()
    cached = cache_dir / model.filename
    if cached.is_file():
        if model.sha256 is None:
            return cached
        actual = sha256_file(cached)
        if actual == model.sha256:
            return cached
        # Our own cache: a bad file (truncated copy, disk error) is simply fetched again.
        log.warning(
            "cached %s has SHA-256 %s, expected %s; downloading it again",
            cached, actual, model.sha256,
        )  # fmt: skip
        cached.unlink()

    return _download(model, cache_dir, progress=progress)


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split()) or type(reason).__name__


def _stream(request: urllib.request.Request, out: BinaryIO, label: str, progress: bool) -> str:
    """Copy the response body into `out`, hashing as it goes; the hex SHA-256 of what was read."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            file=sys.stderr,
            disable=not progress,
            leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client usually raises IncompleteRead itself; this catches the cases it lets through.
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return digest.hexdigest()


def _where_to_put(model: NamedModel) -> str:
    """The offline hint; names the folder LBNET_WEIGHTS_DIR points at, resolved, since a relative
    setting is read against the current folder and silently misses after a `cd`."""
    user_dir = _env("LBNET_WEIGHTS_DIR")
    if user_dir:
        folder = Path(user_dir).expanduser().resolve()
        return (
            f"{model.filename} is not in LBNET_WEIGHTS_DIR={user_dir} ({folder}); "
            "put it there or pass a .pt path"
        )
    return f"put {model.filename} in a folder named by LBNET_WEIGHTS_DIR, or pass a .pt path"


def _download(model: NamedModel, cache_dir: Path, *, progress: bool) -> Path:
    url = weights_url(model)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"lbnet-deploy/{__version__}"})
    except ValueError as exc:  # e.g. LBNET_WEIGHTS_URL without a scheme
        raise LBNetError(f"cannot download {url}: {_one_line(exc)}") from exc
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Temp file in the cache folder itself so os.replace is an atomic rename on one
        # filesystem; concurrent downloads each get their own temp file and the last rename wins.
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{model.filename}.", suffix=".part")
    except OSError as exc:
        raise LBNetError(f"cannot write to cache folder {cache_dir}: {_one_line(exc)}") from exc
    tmp = Path(tmp_name)
    target = cache_dir / model.filename
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                actual = _stream(request, out, model.filename, progress)
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {_one_line(exc.reason)}"
                raise LBNetError(f"cannot download {url}: {reason}") from exc
            except urllib.error.URLError as exc:  # no network, DNS, refused
                hint = _where_to_put(model)
                raise LBNetError(
                    f"cannot download {url}: {_one_line(exc.reason)} (offline? {hint})"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                # Timeouts, resets, short reads, a full disk.
                reason = _one_line(exc)
                if isinstance(exc, http.client.IncompleteRead):
                    reason = f"connection closed with {exc.expected} bytes still to come"
                raise LBNetError(f"cannot download {url}: {reason}") from exc
        if model.sha256 is not None and actual != model.sha256:
            raise LBNetError(
                f"download of {model.name} from {url} has SHA-256 {actual}, "
                f"expected {model.sha256}; nothing was cached"
            )
        os.replace(tmp, target)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a partial file behind.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise

    if model.sha256 is None:
        log.warning(
            "the SHA-256 of %s is not known to lbnet-deploy, so %s cannot be verified; its "
            "SHA-256 is %s (pin it if you trust it)", model.name, target, actual,
        )  # fmt: skip
    return target
