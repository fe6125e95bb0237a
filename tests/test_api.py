"""The Python API as README.md shows it: the example block runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import lbnet_deploy

from .conftest import DATA, REPO, needs_data, needs_weights


def test_api_names_are_exported_and_cheap_to_import() -> None:
    import subprocess
    import sys

    names = ("load_checkpoint", "export_onnx", "calibrate", "build_engine", "open_runner",
             "upscale", "upscale_file", "evaluate_dataset", "ModelFacts", "LBNetError")  # fmt: skip
    for name in names:
        assert name in lbnet_deploy.__all__ and callable(getattr(lbnet_deploy, name))
    heavy = "{'torch', 'onnx', 'onnxruntime'}"
    code = f"import sys, lbnet_deploy; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # nothing heavy until a call needs it


@needs_weights
@needs_data
def test_readme_api_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (REPO / "README.md").read_text()
    block = re.search(
        r"<!-- api-example -->\n```python\n(.*?)```\n<!-- /api-example -->", text, re.S
    )
    assert block, "README.md has the API example between its markers"
    code = block.group(1).replace("../shared/data", str(DATA))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md api-example", "exec"), {})
    assert (tmp_path / "bird-x4.png").is_file() and (tmp_path / "t4-64.onnx").is_file()
    assert os.environ.get("LBNET_WEIGHTS_DIR")  # resolved the name from the shared weights
