"""Shared fixtures: the real checkpoints and images in ../shared, and exported graphs cached
once per session (an export takes 10-30 s)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LBNET_SHARED_DIR", REPO.parent / "shared"))
WEIGHTS = SHARED / "weights"
DATA = Path(os.environ.get("LBNET_DATA_DIR", SHARED / "data")).resolve()
WEIGHTS_DIR = Path(os.environ.get("LBNET_WEIGHTS_DIR", WEIGHTS)).resolve()  # named models

# the five checkpoints we have: file name -> (variant, scale)
CHECKPOINTS = {
    "LBNet-X2.pt": ("LBNet", 2),
    "LBNet-X3.pt": ("LBNet", 3),
    "LBNet-T_X2.pt": ("LBNet-T", 2),
    "LBNet-T_X3.pt": ("LBNet-T", 3),
    "LBNet-T_X4.pt": ("LBNet-T", 4),
}

needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "LBNet-T_X4.pt").is_file(), reason=f"official checkpoints missing in {WEIGHTS}"
)
needs_data = pytest.mark.skipif(
    not (DATA / "Set5" / "HR").is_dir(), reason=f"Set5/Set14 missing in {DATA}"
)


def load_study(name: str):
    """A research script of benchmarks/studies/ (not installed: run from the checkout)."""
    import importlib
    import sys

    folder = str(REPO / "benchmarks" / "studies")
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as `python benchmarks/studies/NAME.py` would have it
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _weights_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Named models resolve to ../shared/weights and data to ../shared/data unless a test says
    otherwise."""
    # absolute, since README's command sets a relative folder and tests chdir into tmp_path
    monkeypatch.setenv("LBNET_WEIGHTS_DIR", str(WEIGHTS_DIR))
    monkeypatch.setenv("LBNET_DATA_DIR", str(DATA))  # bench's Set5 and calibration photos


def set5_lr(scale: int, name: str) -> np.ndarray:
    """A Set5 MATLAB-bicubic LR image as uint8 RGB HxWx3."""
    return np.asarray(
        Image.open(DATA / "Set5" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
    )


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory):
    """Export each (checkpoint, input size) once per test session."""
    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.model.checkpoint import load_checkpoint

    folder = tmp_path_factory.mktemp("onnx")
    done: dict[tuple[str, tuple[int, int] | None], Path] = {}

    def get(ckpt: str, size: tuple[int, int] | None = None) -> Path:
        if (ckpt, size) not in done:
            model, _ = load_checkpoint(WEIGHTS / ckpt)
            label = "dyn" if size is None else "{}x{}".format(*size)
            out = folder / f"{Path(ckpt).stem}_{label}.onnx"
            export_onnx(
                model, out, ExportOptions(input_size=size, batch=None if size is None else 1)
            )
            done[(ckpt, size)] = out
        return done[(ckpt, size)]

    return get
