"""`lbnet-deploy eval`: the paper's protocol from LR files or from HR alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.cli import main
from lbnet_deploy.quality.imresize import make_lr
from lbnet_deploy.quality.metrics import mean_scores

from .conftest import DATA, needs_data, needs_weights, texture

T4 = "random-LBNet-T-x4"


def _dataset(root: Path, *, with_lr: bool) -> Path:
    """An EDSR-layout set of photo-like HR images (sizes not multiples of 4), with
    LR_bicubic/X4 made by our MATLAB bicubic when `with_lr`."""
    for i, (h, w) in enumerate([(98, 101), (64, 80), (77, 60)]):
        hr = texture(h, w, seed=i)
        (root / "HR").mkdir(parents=True, exist_ok=True)
        Image.fromarray(hr).save(root / "HR" / f"img{i}.png")
        if with_lr:
            (root / "LR_bicubic" / "X4").mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_lr(hr, 4)[1]).save(root / "LR_bicubic" / "X4" / f"img{i}x4.png")
    return root


@pytest.fixture(scope="module")
def hr_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set5's HR images alone, no LR files: LR must come from our MATLAB bicubic."""
    folder = tmp_path_factory.mktemp("hr_only")
    if not (DATA / "Set5" / "HR").is_dir():
        pytest.skip(f"Set5 missing in {DATA}")
    for path in (DATA / "Set5" / "HR").glob("*.png"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@needs_data
def test_bicubic_row_from_hr_alone(hr_only: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["eval", "--model", "bicubic", "--scale", "4", "--dataset", str(hr_only)]
    assert main([*args, "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["mean_psnr_y"] == pytest.approx(28.42, abs=0.02)


def test_hr_only_equals_given_lr_and_saved_images_score_the_same(
    export_cache, tmp_path: Path
) -> None:
    model = str(export_cache(T4))
    sets = {"given": _dataset(tmp_path / "given", with_lr=True),
            "hr_only": _dataset(tmp_path / "hr_only", with_lr=False)}  # fmt: skip
    results = {}
    for label, dataset in sets.items():
        out, sr_dir = tmp_path / f"{label}.json", tmp_path / f"sr_{label}"
        args = ["eval", "--model", model, "--dataset", str(dataset), "--save-sr", str(sr_dir)]
        assert main([*args, "--json", str(out), "-q"]) == 0
        results[label] = json.loads(out.read_text())
    given, made = results["given"], results["hr_only"]
    assert {i["lr_source"] for i in given["images"]} == {"given"}
    assert not any(i["tiled"] for i in given["images"]), "eval runs images whole by default"
    assert {i["lr_source"] for i in made["images"]} == {"bicubic"}
    assert made["mean_psnr_y"] == pytest.approx(given["mean_psnr_y"], abs=1e-9)  # bit-exact LR
    # score the saved PNGs independently: same mean as the JSON
    pairs = []
    for hr_path in sorted((sets["hr_only"] / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path).convert("RGB"))
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        pairs.append((np.asarray(Image.open(tmp_path / "sr_hr_only" / hr_path.name)), hr))
    assert mean_scores(pairs, shave=4).psnr == pytest.approx(made["mean_psnr_y"], abs=1e-9)


@pytest.mark.slow  # a dynamic export of the real LBNet-T x4 (~40 s on 2 cores)
@needs_weights
@needs_data
def test_set5_through_onnx_matches_the_paper(hr_only: Path, export_cache, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["eval", "--model", str(export_cache("LBNet-T_X4.pt")), "--dataset", str(DATA / "Set5")]
    assert main([*args, "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "Set5" and result["paper_psnr_y"] == 32.08
    assert abs(result["psnr_y_minus_paper"]) <= 0.01


class Nearest:
    """A runner that upscales by pixel repetition: it commutes with flips and rotations, so
    the self-ensemble of it is itself exactly (a transform not undone would show)."""

    scale, input_size, max_batch = 4, None, None

    def __init__(self) -> None:
        from lbnet_deploy.descriptor import describe
        from lbnet_deploy.metadata import ModelFacts

        self.model_facts = ModelFacts(describe("LBNet-T", 4))

    def describe(self) -> dict[str, object]:
        return {}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return batch.repeat(4, axis=2).repeat(4, axis=3)


@pytest.mark.parametrize("tile", [None, 8])  # batched whole image; tiled, one run at a time
def test_self_ensemble_undoes_each_transform(tile: int | None) -> None:
    from lbnet_deploy.evaluate import self_ensemble
    from lbnet_deploy.runtime.upscaler import Upscaler

    lr = texture(13, 9)  # not square: a rotation not undone changes the shape
    upscaler = Upscaler(Nearest(), tile=tile, overlap=2)  # type: ignore[arg-type]
    np.testing.assert_array_equal(self_ensemble(upscaler, lr), lr.repeat(4, 0).repeat(4, 1))


def test_self_ensemble_and_baseline(export_cache, tmp_path: Path) -> None:
    model = str(export_cache(T4))
    dataset = _dataset(tmp_path / "set", with_lr=False)
    out = tmp_path / "r.json"
    args = ["eval", "--model", model, "--dataset", str(dataset), "--self-ensemble"]
    assert main([*args, "--baseline", model, "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())
    assert r["max_abs_vs_baseline"] == 0 and r["psnr_y_minus_baseline"] == 0
    # the ensemble averages 8 different runs: it must change the result
    assert r["ensemble_gain_psnr_y"] != 0
    assert all(i["ensemble_psnr_y"] != i["psnr_y"] for i in r["images"])


def test_eval_rejects_a_scale_the_model_does_not_have(export_cache, tmp_path: Path) -> None:
    model = str(export_cache(T4))
    dataset = str(_dataset(tmp_path / "set", with_lr=False))
    assert main(["eval", "--model", model, "--dataset", dataset, "--scale", "2"]) == 2


def test_compare_writes_captioned_crops_of_each_model(
    export_cache, checkpoint, shared_cache, tmp_path: Path
) -> None:
    """`--compare DIR`: one PNG per image, panels bicubic | model | baseline | each
    --compare-model (here the FP16 graph, by `@fp16`) | HR, the crop where the models differ
    most; every model's PSNR-Y in the JSON too."""
    from lbnet_deploy.compare import CAPTION, CROP, GAP, ZOOM

    export_cache(T4)  # the FP32 graph the checkpoint resolves to, in the shared cache
    model = str(checkpoint(T4))
    dataset = _dataset(tmp_path / "set", with_lr=False)
    out, cmp = tmp_path / "r.json", tmp_path / "cmp"
    args = ["eval", "--model", model, "--dataset", str(dataset), "--baseline", "bicubic-x4",
            "--compare", str(cmp), "--compare-model", f"{model}@fp16",
            "--json", str(out), "-q"]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert sorted(p.name for p in cmp.iterdir()) == ["img0.png", "img1.png", "img2.png"]
    for image in r["images"]:
        ((label, fp16_psnr),) = image["compare_psnr_y"].items()
        assert label == f"{model}@fp16" and abs(fp16_psnr - image["psnr_y"]) < 0.05
        sheet = np.asarray(Image.open(cmp / f"{image['name']}.png").convert("RGB"))
        hr_size = {"img0": (96, 100), "img1": (64, 80), "img2": (76, 60)}[image["name"]]
        side = ZOOM * min(CROP, *hr_size)  # the whole image where it is smaller than a crop
        assert sheet.shape == (side + CAPTION, 5 * (side + GAP) - GAP, 3)
        panels = [sheet[:side, i * (side + GAP) : i * (side + GAP) + side] for i in range(5)]
        assert not np.array_equal(panels[0], panels[4])  # bicubic is not HR
        assert np.array_equal(
            panels[2][::ZOOM, ::ZOOM], panels[0][::ZOOM, ::ZOOM]
        )  # baseline: bicubic
        assert sheet[side:].min() < 128  # captions were drawn


def test_compare_refuses_what_would_go_wrong_before_any_work(
    export_cache, tmp_path: Path, capsys
) -> None:
    model = str(export_cache(T4))
    dataset = _dataset(tmp_path / "set", with_lr=False)
    base = ["eval", "--model", model, "--dataset", str(dataset), "-q"]
    cases = [
        (["--compare-model", "bicubic-x4"], "--compare-model adds panels to --compare DIR"),
        (["--compare", str(dataset / "HR")], "is inside the dataset"),  # the dataset's HR
        (["--save-sr", str(dataset)], "--save-sr"),  # beside HR/: not read, but inside
        (["--compare", str(dataset / "HR" / ".." / "HR")], "is inside the dataset"),
        (
            ["--compare", str(tmp_path / "o"), "--save-sr", str(tmp_path / "o")],
            "would overwrite the output",
        ),
        (
            ["--compare", str(tmp_path / "c"), "--compare-model", "bicubic-x2"],
            f"--compare-model bicubic-x2 is a x2 model, but --model {model} is x4",
        ),
        (
            ["--compare", str(tmp_path / "c"), "--baseline", "bicubic-x2"],
            f"--baseline bicubic-x2 is a x2 model, but --model {model} is x4",
        ),
        (["--baseline", "bicubic-x3"], "--baseline bicubic-x3 is a x3 model"),
        (
            ["--compare", str(tmp_path / "c"), *["--compare-model", "bicubic-x4"] * 2],
            "--compare-model bicubic-x4 is given twice",
        ),
        (["--compare", str(tmp_path / "c"), "--compare-model", "/no/such.onnx"], "not found"),
        (
            ["--compare", str(tmp_path / "c"), "--compare-model", f"{model}@fp16"],
            "has its own precision",
        ),
    ]
    for extra, message in cases:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_model_at_precision_is_split_only_on_a_precision() -> None:
    from lbnet_deploy.commands.options import split_precision

    assert split_precision("lbnet-t-x4@fp16") == ("lbnet-t-x4", "fp16")
    assert split_precision("dir@home/m.onnx") == ("dir@home/m.onnx", None)
    assert split_precision("m.onnx@int8") == ("m.onnx@int8", None)  # INT8 is a file's own


def test_outputs_beside_other_kinds_of_dataset_images_are_refused(tmp_path: Path, capsys) -> None:
    """HR/one.bmp and --compare HR: one.png beside it would make the next eval refuse the
    dataset (two images named one); --save-sr the same. Refused before any work."""
    hr = tmp_path / "ds" / "HR"
    hr.mkdir(parents=True)
    Image.fromarray(texture(24, 24)).save(hr / "one.bmp")
    base = ["eval", "--dataset", str(tmp_path / "ds"), "--model", "bicubic", "--scale", "4", "-q"]
    for option in ("--compare", "--save-sr"):
        assert main([*base, option, str(hr)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{option} {hr} is inside the dataset" in line
        assert [p.name for p in hr.iterdir()] == ["one.bmp"]
    assert main(base) == 0  # the dataset is still one image


def test_an_output_name_too_long_with_its_temporary_is_refused_before_work(
    tmp_path: Path, capsys
) -> None:
    """HR/<245 characters>.bmp: its --save-sr PNG fits a file name, its temporary (14 bytes
    more) does not; found before any image is scored, not when the first is written."""
    hr = tmp_path / "ds" / "HR"
    hr.mkdir(parents=True)
    Image.fromarray(texture(24, 24)).save(hr / f"{'n' * 245}.bmp")
    args = ["eval", "--dataset", str(tmp_path / "ds"), "--model", "bicubic", "--scale", "4"]
    assert main([*args, "--save-sr", str(tmp_path / "sr"), "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "bytes long;" in line and not (tmp_path / "sr").exists()
