"""Whole-or-nothing file writes: every output of this tool (images, reports, graphs' sidecars,
engines) goes through here, so readers never see a half-written file and a failure leaves
nothing behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lbnet_deploy.errors import LBNetError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to a uniquely named temporary file beside `path`, then rename it into place
    (unique, so two writers of the same file never share a temporary)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise LBNetError(f"output folder does not exist: {path.parent}")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise LBNetError(f"cannot write {path} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise LBNetError(f"cannot write {path} ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())
