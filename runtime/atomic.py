"""Whole-or-nothing file writes: every output of this tool (images, reports, ONNX graphs,
engines and their sidecars, timing caches) goes through here, so readers never see a
half-written file and a failure leaves nothing behind."""

from __future__ import annotations

import glob
import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

from lbnet_deploy.errors import LBNetError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_files_atomic(files: dict[Path, bytes]) -> None:
    """Write every file to a uniquely named temporary beside it, then rename them all into place
    in the given order: a failure while writing (a full disk) renames nothing and removes the
    temporaries; only a failing rename, within one folder, could leave the first ones renamed.
    Files get the usual permissions (mkstemp's are 0600, unreadable to other users such as a
    Triton server)."""
    mode = 0o666 & ~_umask()
    temps: dict[Path, str] = {}
    try:
        for path, data in files.items():
            if not path.parent.is_dir():
                raise LBNetError(f"output folder does not exist: {path.parent}")
            remove_stale_temporaries(path)
            # the name is registered before the file can exist (mkstemp creates it and only
            # then returns its name: an interrupt in between orphaned an empty file)
            temps[path] = tmp = str(path.parent / _temporary_name(path.name))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "wb") as fh:
                    os.fchmod(fh.fileno(), mode)  # exactly `mode`, whatever the umask did
                    fh.write(data)
            except OSError as exc:
                raise LBNetError(f"cannot write {path} ({exc.strerror or exc})") from None
        for path, tmp in temps.items():
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise LBNetError(f"cannot write {path} ({exc.strerror or exc})") from None
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def _temporary_name(name: str, token: str | None = None) -> str:
    return f".{name}.{token or secrets.token_hex(4)}.tmp"


def name_max(folder: Path) -> int:
    """The longest file name (bytes) `folder`'s file system takes (255 where it does not say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer
        return 255


def check_name_fits(path: Path) -> None:
    """One line, before any work, where `path`'s name with its temporary's additions is longer
    than the file system of its folder (or the nearest one that exists) takes: found at write
    time, it failed every file, after the model had run."""
    folder = path.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    limit = name_max(folder)
    extra = len(_temporary_name("", "0" * 8))
    if len(os.fsencode(path.name)) + extra > limit:
        raise LBNetError(
            f"output name {path.name[:40]}... is {len(os.fsencode(path.name))} bytes long; "
            f"{folder} takes {limit - extra} at most (its temporary adds {extra})"
        )


STALE_SECONDS = 3600


def remove_stale_temporaries(path: Path) -> None:
    """Remove our own temporaries for `path` (`.NAME.XXXXXXXX.tmp`) left by a process killed
    outright (SIGKILL, power loss) more than an hour ago; younger ones may be a concurrent
    writer's."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - tmp.lstat().st_mtime > STALE_SECONDS and tmp.is_file():
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to remove


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_files_atomic({Path(path): data})


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def default_dir_mode() -> int:
    """What mkdir would give a folder (mkdtemp's are 0700)."""
    return 0o777 & ~_umask()


def _finite(value: Any) -> Any:
    """NaN and infinities as null (JSON has no such numbers: Python's `Infinity` is invalid)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def strict_json(data: Any) -> str:
    """Reports as strict JSON (a perfect image's PSNR, infinite, is written as null)."""
    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, strict_json(data))
