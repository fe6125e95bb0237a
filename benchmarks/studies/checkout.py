"""Where a checkout's studies find the workplace's data and checkpoints: `../shared` beside the
repository (Set5, Set14, SunHays80; the official checkpoints). Studies run from a checkout
(`python benchmarks/studies/NAME.py`); the installed package never looks here."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"
SHARED_DATA = Path(os.environ.get("LBNET_DATA_DIR", SHARED / "data"))


def use_shared_weights() -> None:
    """Named models come from the shared checkpoints when the user named no folder: studies
    run offline and must not fall back to a download."""
    if not os.environ.get("LBNET_WEIGHTS_DIR") and (SHARED / "weights").is_dir():
        os.environ["LBNET_WEIGHTS_DIR"] = str(SHARED / "weights")
