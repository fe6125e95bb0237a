"""A stand-in for the two torchvision names spandrel imports when it is imported (its LaMa and
RestoreFormer architectures: `rotate`, `InterpolationMode`, `normalize`), for machines where
torchvision cannot be imported: PyPI's torchvision wheels are CUDA builds of their torch and do
not load beside torch's CPU wheel (this workplace's; README, spandrel). LBNet's architecture
uses no torchvision; the stand-ins fail if called, so a test that reached them would fail."""

from __future__ import annotations

import enum
import importlib
import sys
import types


def torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision")
    except Exception:  # ImportError, or the RuntimeError of a build that does not fit torch
        sys.modules.pop("torchvision", None)
        return False
    return True


def stub_modules() -> dict[str, types.ModuleType]:
    """torchvision, .transforms, .transforms.functional with the names spandrel imports."""

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"

    def unavailable(*args: object, **kwargs: object) -> None:
        raise RuntimeError("torchvision stand-in (tests/torchvision_stub.py): not available")

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.rotate = functional.normalize = unavailable  # type: ignore[attr-defined]
    root.transforms, transforms.functional = transforms, functional  # type: ignore[attr-defined]
    return {m.__name__: m for m in (root, transforms, functional)}


def install() -> None:
    """Put the stand-ins in sys.modules where torchvision does not import (for a run by hand:
    `python -c "import tests.torchvision_stub as t; t.install(); ..."`)."""
    if not torchvision_importable():
        sys.modules.update(stub_modules())
