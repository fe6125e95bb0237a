"""Whole-or-nothing file writes: every output of this tool (images, reports, ONNX graphs,
engines and their sidecars, timing caches) goes through here, so readers never see a
half-written file and a failure leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
            try:
                fd, temps[path] = tempfile.mkstemp(
                    dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
                )
                with os.fdopen(fd, "wb") as fh:
                    os.fchmod(fh.fileno(), mode)
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


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_files_atomic({Path(path): data})


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def default_dir_mode() -> int:
    """What mkdir would give a folder (mkdtemp's are 0700)."""
    return 0o777 & ~_umask()
