"""Copy tensorrt-stubs' .pyi files into .typings/ (mypy_path) with their syntax errors mended.

The package installs `tensorrt/__init__.pyi` without a py.typed marker, so mypy does not find it
in site-packages, and four plugin methods name a parameter `in` (a keyword) and one signature puts
a required parameter after defaulted ones: mypy rejects the file outright. None of those methods
are ours; the renamed parameter and the added default only make the file parse.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

spec = importlib.util.find_spec("tensorrt_stubs")
if spec is None or spec.origin is None:
    raise SystemExit("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
site = Path(spec.origin).parents[1]
target = Path(__file__).resolve().parents[1] / ".typings"
shutil.rmtree(target, ignore_errors=True)
for package in ("tensorrt", "tensorrt_bindings"):
    for stub in (site / package).glob("*.pyi"):
        text = stub.read_text()
        text = re.sub(r"\bin: list\[", "in_: list[", text)
        text = text.replace(
            "power: Weights = None, channel_axis: int)",
            "power: Weights = None, channel_axis: int = ...)",
        )
        out = target / package / stub.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
print(f"tensorrt stubs from {site} -> {target}")
