"""`lbnet-deploy eval`: the paper's protocol from LR files or from HR alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.cli import main
from lbnet_deploy.evaluate import _forward, _inverse
from lbnet_deploy.quality.metrics import mean_scores

from .conftest import DATA, needs_data, needs_weights

pytestmark = [needs_weights, needs_data]


@pytest.fixture(scope="module")
def hr_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set5's HR images alone, no LR files: LR must come from our MATLAB bicubic."""
    folder = tmp_path_factory.mktemp("hr_only")
    for path in (DATA / "Set5" / "HR").glob("*.png"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="module")
def small_hr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Centre crops of Set5 HR (96x96), for runs that repeat the model many times."""
    folder = tmp_path_factory.mktemp("small_hr")
    for path in (DATA / "Set5" / "HR").glob("*.png"):
        img = Image.open(path).convert("RGB")
        w, h = img.size
        img.crop(((w - 96) // 2, (h - 96) // 2, (w + 96) // 2, (h + 96) // 2)).save(
            folder / path.name
        )
    return folder


def test_bicubic_row_from_hr_alone(hr_only: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["eval", "--model", "bicubic", "--scale", "4", "--dataset", str(hr_only)]
    assert main([*args, "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["mean_psnr_y"] == pytest.approx(28.42, abs=0.02)


def test_hr_only_equals_given_lr_and_saved_images_score_the_same(
    hr_only: Path, export_cache, tmp_path: Path
) -> None:
    model = str(export_cache("LBNet-T_X4.pt", None))
    results = {}
    for label, dataset in (("given", DATA / "Set5"), ("hr_only", hr_only)):
        out, sr_dir = tmp_path / f"{label}.json", tmp_path / f"sr_{label}"
        args = ["eval", "--model", model, "--dataset", str(dataset), "--save-sr", str(sr_dir)]
        assert main([*args, "--json", str(out), "-q"]) == 0
        results[label] = json.loads(out.read_text())
    given, made = results["given"], results["hr_only"]
    assert {i["lr_source"] for i in given["images"]} == {"given"}
    assert not any(i["tiled"] for i in given["images"]), "eval runs images whole by default"
    assert {i["lr_source"] for i in made["images"]} == {"bicubic"}
    assert made["mean_psnr_y"] == pytest.approx(given["mean_psnr_y"], abs=1e-9)  # bit-exact LR
    assert given["dataset"] == "Set5" and given["paper_psnr_y"] == 32.08
    assert abs(given["psnr_y_minus_paper"]) <= 0.01
    # score the saved PNGs independently: same mean as the JSON
    pairs = []
    for hr_path in sorted(hr_only.glob("*.png")):
        hr = np.asarray(Image.open(hr_path).convert("RGB"))
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        pairs.append((np.asarray(Image.open(tmp_path / "sr_hr_only" / hr_path.name)), hr))
    assert mean_scores(pairs, shave=4).psnr == pytest.approx(made["mean_psnr_y"], abs=1e-9)


@pytest.mark.parametrize("k", range(8))
def test_ensemble_transforms_invert(k: int) -> None:
    img = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    np.testing.assert_array_equal(_inverse(_forward(img, k), k), img)


def test_self_ensemble_and_baseline(small_hr: Path, export_cache, tmp_path: Path) -> None:
    model = str(export_cache("LBNet-T_X4.pt", None))
    out = tmp_path / "r.json"
    args = ["eval", "--model", model, "--dataset", str(small_hr), "--self-ensemble"]
    assert main([*args, "--baseline", model, "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())
    assert r["max_abs_vs_baseline"] == 0 and r["psnr_y_minus_baseline"] == 0
    # the ensemble averages 8 different runs: it must change the result, by a plausible amount
    assert 0 < abs(r["ensemble_gain_psnr_y"]) < 1
    assert all(i["ensemble_psnr_y"] != i["psnr_y"] for i in r["images"])


def test_eval_rejects_a_scale_the_model_does_not_have(hr_only: Path, export_cache) -> None:
    model = str(export_cache("LBNet-T_X4.pt", None))
    assert main(["eval", "--model", model, "--dataset", str(hr_only), "--scale", "2"]) == 2
