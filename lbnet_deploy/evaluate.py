"""`lbnet-deploy eval`: PSNR/SSIM of any model file or backend with the paper's protocol.

Protocol (LBNET.md): HR cropped to a multiple of s; LR = MATLAB bicubic imresize(HR, 1/s) (the
dataset's own LR files when it has them in the EDSR layout); SR rounded to uint8; Y channel;
s pixels shaved at every border; mean over images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lbnet_deploy.compare import Panel, write_sheet
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.paper import paper_scores
from lbnet_deploy.quality.imresize import imresize, make_lr
from lbnet_deploy.quality.metrics import psnr_y, ssim_y
from lbnet_deploy.runtime.atomic import write_json_atomic
from lbnet_deploy.runtime.files import IMAGE_SUFFIXES
from lbnet_deploy.runtime.images import read_image, write_image_atomic
from lbnet_deploy.runtime.upscaler import Upscaler, to_uint8

log = logging.getLogger("lbnet_deploy")


@dataclass(frozen=True)
class Sample:
    name: str
    hr: np.ndarray  # uint8 H x W x 3, cropped to a multiple of the scale
    lr: np.ndarray  # uint8 H/s x W/s x 3
    lr_source: str  # "given" (the dataset's LR file) or "bicubic" (made here)


def find_hr_images(dataset: Path) -> list[Path]:
    """`DIR/HR/*` (EDSR benchmark layout) or the images directly in DIR."""
    folder = dataset / "HR" if (dataset / "HR").is_dir() else dataset
    if not folder.is_dir():
        raise LBNetError(f"dataset folder not found: {dataset}")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise LBNetError(f"no HR images in {folder}")
    return images


def load_samples(
    dataset: Path,
    scale: int,
    lr_from_hr: bool = False,
    on_error: Callable[[LBNetError], None] | None = None,
    max_pixels: int | None = None,
) -> list[Sample]:
    """HR/LR pairs; LR files are taken from `LR_bicubic/X{s}/<name>x{s}.png` when present.

    `on_error`: called with each image's problem (unreadable, a bomb, LR not matching HR) and
    that image left out; None: the first problem is raised. `max_pixels`: the largest LR image
    (the Upscaler's `max_input_pixels`), checked from the file headers (HR: s^2 times it)."""
    samples = []
    for hr_path in find_hr_images(dataset):
        try:
            samples.append(_sample(dataset, hr_path, scale, lr_from_hr, max_pixels))
        except LBNetError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return samples


def _sample(
    dataset: Path, hr_path: Path, scale: int, lr_from_hr: bool, max_pixels: int | None
) -> Sample:
    """One HR/LR pair (see `load_samples`)."""
    hr_max = max_pixels * scale * scale if max_pixels is not None else None
    hr = read_image(hr_path, hr_max, "the memory budget").rgb  # gray as R = G = B, as the paper
    lr_path = dataset / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
    if min(hr.shape[:2]) < scale:
        raise LBNetError(f"{hr_path} is smaller than the scale {scale}")
    hr_crop, lr = make_lr(hr, scale)
    source = "bicubic"
    if lr_path.is_file() and not lr_from_hr:
        lr, source = read_image(lr_path, max_pixels, "the memory budget").rgb, "given"
        if lr.shape[0] * scale != hr_crop.shape[0] or lr.shape[1] * scale != hr_crop.shape[1]:
            raise LBNetError(f"{lr_path} is not {hr_path.name} downscaled by {scale}")
    return Sample(hr_path.stem, hr_crop, lr, source)


# the x8 self-ensemble (EDSR): flips and 90-degree rotations, undone on the output
def _forward(img: np.ndarray, k: int) -> np.ndarray:
    out = np.rot90(img, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def _inverse(img: np.ndarray, k: int) -> np.ndarray:
    img = img[:, ::-1] if k >= 4 else img
    return np.rot90(img, -(k % 4), axes=(0, 1))


def self_ensemble(upscaler: Upscaler, lr: np.ndarray) -> np.ndarray:
    """Mean of the 8 transformed runs. Runs of the same shape go through the runner as one
    batch when the whole image is one tile and the runner takes any batch."""
    runner = upscaler.runner
    outputs: list[np.ndarray | None] = [None] * 8
    batchable = runner.max_batch is None and runner.input_size is None
    if batchable and upscaler.plan(*lr.shape[:2]).whole:
        for group in ((0, 2, 4, 6), (1, 3, 5, 7)):  # same shape within each group
            batch = np.stack([_forward(lr, k).transpose(2, 0, 1) for k in group])
            for k, sr in zip(group, runner.infer(batch.astype(np.float32)), strict=True):
                outputs[k] = sr.transpose(1, 2, 0)
    else:
        for k in range(8):
            outputs[k] = upscaler.upscale_float(np.ascontiguousarray(_forward(lr, k)))
            outputs[k] = outputs[k].transpose(1, 2, 0)  # type: ignore[union-attr]
    mean = np.mean([_inverse(o, k) for k, o in enumerate(outputs)], axis=0)  # type: ignore[arg-type]
    return to_uint8(mean)


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    lr_source: str
    tiled: bool = False  # True where the image did not fit the memory budget whole
    ensemble_psnr_y: float | None = None
    ensemble_ssim_y: float | None = None
    baseline_psnr_y: float | None = None
    max_abs_vs_baseline: int | None = None
    compare_psnr_y: dict[str, float] | None = None  # `--compare-model`s, by label


@dataclass(frozen=True)
class Compare:
    """`eval --compare`: where the side-by-side crops go, the labels of the model and the
    baseline, and the further models shown (label, upscaler), each scored too."""

    folder: Path
    model: str
    baseline: str | None = None
    models: tuple[tuple[str, Upscaler], ...] = ()


@dataclass
class EvalResult:
    model: str
    variant: str
    dataset: str
    scale: int
    images: list[ImageScore] = field(default_factory=list)
    seconds: float = 0.0
    baseline: str | None = None
    failed: list[str] = field(default_factory=list)  # images that could not be scored

    def mean(self, key: str) -> float | None:
        values = [getattr(i, key) for i in self.images]
        return None if any(v is None for v in values) else float(np.mean(values))

    def to_dict(self) -> dict[str, object]:
        paper = paper_scores(self.variant, self.scale, self.dataset)
        mean_psnr, mean_ssim = self.mean("psnr_y"), self.mean("ssim_y")
        out: dict[str, object] = {
            "model": self.model,
            "variant": self.variant,
            "dataset": self.dataset,
            "scale": self.scale,
            "protocol": "Y channel (BT.601, 16-235), shave = scale, SR rounded to uint8, "
            "LR = MATLAB bicubic imresize; SSIM: Gaussian 11x11, sigma 1.5",
            "mean_psnr_y": mean_psnr,
            "mean_ssim_y": mean_ssim,
            "paper_psnr_y": paper[0] if paper else None,
            "paper_ssim_y": paper[1] if paper else None,
            "psnr_y_minus_paper": mean_psnr - paper[0] if paper and mean_psnr else None,
            "seconds": self.seconds,
            "images": [vars(i) for i in self.images],
            "failed": list(self.failed),  # left out of the means above
        }
        if self.mean("ensemble_psnr_y") is not None:
            out["mean_ensemble_psnr_y"] = self.mean("ensemble_psnr_y")
            out["mean_ensemble_ssim_y"] = self.mean("ensemble_ssim_y")
            out["ensemble_gain_psnr_y"] = self.mean("ensemble_psnr_y") - mean_psnr  # type: ignore[operator]
        if self.baseline:
            out["baseline"] = self.baseline
            out["mean_baseline_psnr_y"] = self.mean("baseline_psnr_y")
            out["psnr_y_minus_baseline"] = mean_psnr - self.mean("baseline_psnr_y")  # type: ignore[operator]
            out["max_abs_vs_baseline"] = max(i.max_abs_vs_baseline or 0 for i in self.images)
        return out


def evaluate(
    upscaler: Upscaler,
    samples: list[Sample],
    *,
    model: str,
    variant: str,
    dataset: str,
    ensemble: bool = False,
    baseline: Upscaler | None = None,
    baseline_name: str | None = None,
    save_sr: Path | None = None,
    progress: bool = True,
    on_error: Callable[[LBNetError], None] | None = None,
    compare: Compare | None = None,
) -> EvalResult:
    """Score every sample; `on_error`: called with an image's problem (it does not fit the
    memory budget, the model's output is broken), which is then left out and named in the
    result's `failed`; None: the first problem is raised."""
    s = upscaler.runner.scale
    result = EvalResult(model, variant, dataset, s, baseline=baseline_name)
    start = time.perf_counter()
    for i, sample in enumerate(samples, 1):
        try:
            score = _score(upscaler, sample, ensemble, baseline, save_sr, compare)
        except LBNetError as exc:
            if on_error is None:
                raise
            on_error(exc)
            result.failed.append(sample.name)
            continue
        result.images.append(score)
        if progress:
            extra = f", ensemble {score.ensemble_psnr_y:.3f}" if ensemble else ""
            log.info(
                "[%d/%d] %s: %.4f dB / %.5f%s",
                i, len(samples), sample.name, score.psnr_y, score.ssim_y, extra,
            )  # fmt: skip
    result.seconds = time.perf_counter() - start
    return result


def _score(
    upscaler: Upscaler, sample: Sample, ensemble: bool, baseline: Upscaler | None,
    save_sr: Path | None, compare: Compare | None = None,
) -> ImageScore:  # fmt: skip
    s = upscaler.runner.scale
    sr = upscaler.upscale(sample.lr)
    score = ImageScore(
        sample.name, psnr_y(sr, sample.hr, s), ssim_y(sr, sample.hr, s), sample.lr_source,
        tiled=not upscaler.plan(*sample.lr.shape[:2]).whole,
    )  # fmt: skip
    if ensemble:
        sr_ens = self_ensemble(upscaler, sample.lr)
        score.ensemble_psnr_y = psnr_y(sr_ens, sample.hr, s)
        score.ensemble_ssim_y = ssim_y(sr_ens, sample.hr, s)
    label, base_label = (compare.model, compare.baseline or "baseline") if compare else ("", "")
    panels = [Panel(label, sr, score.psnr_y)]  # drawn only with --compare
    if baseline is not None:
        sr_base = baseline.upscale(sample.lr)
        score.baseline_psnr_y = psnr_y(sr_base, sample.hr, s)
        score.max_abs_vs_baseline = int(np.abs(sr.astype(int) - sr_base.astype(int)).max())
        panels.append(Panel(base_label, sr_base, score.baseline_psnr_y))
    if save_sr is not None:
        write_image_atomic(save_sr / f"{sample.name}.png", sr)
    if compare is not None:
        score.compare_psnr_y = {}
        for label, other in compare.models:
            out = other.upscale(sample.lr)
            score.compare_psnr_y[label] = psnr_y(out, sample.hr, s)
            panels.append(Panel(label, out, score.compare_psnr_y[label]))
        bicubic = imresize(sample.lr, s)  # MATLAB's, as the paper's Bicubic rows
        panels = [Panel("bicubic", bicubic, psnr_y(bicubic, sample.hr, s)), *panels]
        write_sheet(compare.folder / f"{sample.name}.png", [*panels, Panel("HR", sample.hr)])
    return score


def table(result: EvalResult) -> str:
    """Per-image rows, the mean, and the paper's row for the same model, scale and dataset."""
    d = result.to_dict()
    has_base = result.baseline is not None
    head = "| image | PSNR-Y | SSIM-Y |" + (
        " baseline PSNR-Y | diff | max abs |" if has_base else ""
    )
    lines = [head, "|---|---|---|" + ("---|---|---|" if has_base else "")]
    for img in result.images:
        row = f"| {img.name} | {img.psnr_y:.4f} | {img.ssim_y:.5f} |"
        if has_base:
            row += (
                f" {img.baseline_psnr_y:.4f} | {img.psnr_y - img.baseline_psnr_y:+.4f} |"  # type: ignore[operator]
                f" {img.max_abs_vs_baseline} |"
            )
        lines.append(row)
    mean = f"| **mean** | **{d['mean_psnr_y']:.4f}** | **{d['mean_ssim_y']:.5f}** |"
    if has_base:
        mean += (
            f" **{d['mean_baseline_psnr_y']:.4f}** | **{d['psnr_y_minus_baseline']:+.4f}** |"
            f" **{d['max_abs_vs_baseline']}** |"
        )
    lines.append(mean)
    if d["paper_psnr_y"] is not None:
        lines.append(
            f"| paper ({result.variant} x{result.scale}, {result.dataset}) | {d['paper_psnr_y']} "
            f"| {d['paper_ssim_y']} |"
        )
        lines.append(f"| difference | {d['psnr_y_minus_paper']:+.4f} | |")
    if "ensemble_gain_psnr_y" in d:
        lines.append(
            f"| self-ensemble x8 | {d['mean_ensemble_psnr_y']:.4f} | "
            f"{d['mean_ensemble_ssim_y']:.5f} |"
        )
        lines.append(f"| ensemble gain | {d['ensemble_gain_psnr_y']:+.4f} | |")
    return "\n".join(lines)


def write_json(result: EvalResult, path: str | Path) -> None:
    write_json_atomic(path, result.to_dict())


def compare_with_float(int8: str | Path, fp32: str | Path, dataset: str | Path) -> EvalResult:
    """`calibrate --eval-dataset`: the INT8 graph's scores beside its FP32 graph's, per image,
    both on ONNX Runtime CPU with the same plan."""
    from lbnet_deploy.loaders import open_runner

    q, f = Upscaler(open_runner(str(int8), "ort")), Upscaler(open_runner(str(fp32), "ort"))
    samples = load_samples(Path(dataset), q.runner.scale)
    return evaluate(
        q, samples, model=str(int8), variant="int8", dataset=str(dataset), baseline=f,
        baseline_name=str(fp32),
    )  # fmt: skip
