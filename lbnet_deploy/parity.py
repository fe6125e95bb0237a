"""`lbnet-deploy parity`: a model file's backend against the PyTorch reference, same inputs.

Polygraphy's comparator checks raw tensors against atol/rtol; what we report (PSNR between the
outputs, the share of uint8 pixels that change) is specific to images, so the few lines of
numpy are written here and Polygraphy is not wrapped.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.quality.imresize import imresize
from lbnet_deploy.runtime.backend import Runner
from lbnet_deploy.runtime.files import expand_inputs
from lbnet_deploy.runtime.images import read_image
from lbnet_deploy.runtime.upscaler import to_uint8

# per precision: (max abs error on 0..255, minimum PSNR between outputs in dB)
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (0.01, 80.0),  # measured: <= 0.0004 on Set5, so 25x headroom
    "fp16": (2.0, 50.0),  # measured: LBNet-T x4 FP16 max abs 0.26, min PSNR 74 dB
    # measured: OpenVINO 2026.4 BF16 (AVX512-BF16 EPYC) on parity's default crops, all five
    # official checkpoints: worst max abs 4.94 (LBNet-T x4), min PSNR 51.6 dB; ~3x / 6 dB
    # headroom (PyTorch's CPU autocast to bfloat16 had given 5.66 and 51.2 dB)
    "bf16": (16.0, 45.0),
    # measured: OpenVINO 2026.4 bf16-attn (attention and linear layers in BF16; AVX512-BF16
    # EPYC), same crops, all five checkpoints: worst max abs 2.12 (LBNet-T x4), min PSNR
    # 62.6 dB; ~3x / 6 dB headroom (the attention alone, AMX Xeon: 0.71, 70.9 dB)
    "bf16-attn": (6.0, 56.0),
    "int8": (24.0, 35.0),  # measured: LBNet-T x4 INT8 (defaults) max abs 19.2, min PSNR 44.7 dB
}
DEFAULT_SIZES = ((48, 48), (37, 29), (64, 40), (3, 5))  # 37x29, 3x5: H*W not a multiple of 16


@dataclass
class Case:
    image: str
    size: str
    max_abs: float
    mean_abs: float
    psnr: float
    uint8_changed: float  # share of output values that differ after rounding to uint8


@dataclass
class Report:
    model: str
    reference: str
    precision: str
    max_abs_tolerance: float
    min_psnr_tolerance: float
    cases: list[Case] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        return max(c.max_abs for c in self.cases)

    @property
    def min_psnr(self) -> float:
        return min(c.psnr for c in self.cases)

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.max_abs_tolerance and self.min_psnr >= self.min_psnr_tolerance

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.update(max_abs=self.max_abs, min_psnr=_finite(self.min_psnr), passed=self.passed)
        for case in out["cases"]:  # type: ignore[union-attr]
            case["psnr"] = _finite(case["psnr"])
        return out


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"  # JSON has no infinity


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float(np.mean(diff**2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    changed = float(np.mean(to_uint8(a) != to_uint8(b)))
    return float(diff.max()), float(diff.mean()), psnr, changed


def default_images() -> list[Path]:
    """Real photos when --images is not given: Set5 HR where LBNET_DATA_DIR points, else the
    public-domain photo that matplotlib ships."""
    data = os.environ.get("LBNET_DATA_DIR")
    if data and (Path(data) / "Set5" / "HR").is_dir():
        return sorted((Path(data) / "Set5" / "HR").glob("*.png"))
    try:
        from matplotlib import cbook

        return [Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    except (ImportError, OSError, ValueError):
        raise LBNetError("no test images: pass --images DIR (a folder of photos)") from None


def lr_crops(photo: np.ndarray, scale: int, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Centre crops of each size from the photo bicubic-downscaled by `scale` (as LR inputs are
    made), or from the photo itself where the downscaled one is too small for the crop."""
    lr = imresize(photo, 1 / scale)
    crops = []
    for h, w in sizes:
        src = lr if lr.shape[0] >= h and lr.shape[1] >= w else photo
        if src.shape[0] < h or src.shape[1] < w:
            raise LBNetError(f"a {photo.shape[1]}x{photo.shape[0]} photo is too small for {w}x{h}")
        y, x = (src.shape[0] - h) // 2, (src.shape[1] - w) // 2
        crops.append(np.ascontiguousarray(src[y : y + h, x : x + w]))
    return crops


def run_parity(
    runner: Runner,
    reference: Runner,
    *,
    model_name: str,
    reference_name: str,
    images: list[Path],
    sizes: list[tuple[int, int]] | None,
    precision: str,
    max_abs: float | None = None,
    min_psnr: float | None = None,
    progress: bool = True,
) -> Report:
    if runner.scale != reference.scale:
        raise LBNetError(f"{model_name} is x{runner.scale} but the reference is x{reference.scale}")
    tol_abs, tol_psnr = TOLERANCES[precision]
    report = Report(
        model_name, reference_name, precision,
        tol_abs if max_abs is None else max_abs, tol_psnr if min_psnr is None else min_psnr,
    )  # fmt: skip
    # a fixed-size model is compared at its own input size only
    sizes = [runner.input_size] if runner.input_size else (sizes or list(DEFAULT_SIZES))
    for path in images:
        photo = read_image(path).rgb
        for crop in lr_crops(photo, runner.scale, sizes):
            x = crop.transpose(2, 0, 1)[None].astype(np.float32)
            if runner.input_size and crop.shape[:2] != runner.input_size:
                raise LBNetError(
                    f"{path} is smaller than the model's input size {runner.input_size}"
                )
            out, ref = runner.infer(x), reference.infer(x)
            case = Case(path.name, f"{crop.shape[0]}x{crop.shape[1]}", *compare(out, ref))
            report.cases.append(case)
            if progress:
                print(
                    f"  {case.image} {case.size}: max abs {case.max_abs:.5f}, "
                    f"mean abs {case.mean_abs:.6f}, PSNR {case.psnr:.1f} dB, "
                    f"uint8 changed {100 * case.uint8_changed:.3f}%"
                )
    return report


def image_list(folder: str | None) -> list[Path]:
    return expand_inputs([folder]) if folder else default_images()


RANGE_SIZES = [(32, 32), (48, 40), (64, 64)]  # several sizes: softmax and pooling see more tokens


def range_report(path: str | Path, images: str | None) -> str:
    """`info --ranges`: per-kind activation ranges of an FP32 graph (FP16 safety) on LR crops
    of real photos (`image_list(images)`), as a table."""
    from lbnet_deploy.export.fp16 import activation_ranges, range_table
    from lbnet_deploy.export.onnx_io import lbnet_facts, load_onnx

    graph = load_onnx(path)
    scale = int(lbnet_facts(graph, path)["scale"])  # checked: a foreign graph is one line
    crops = [c for p in image_list(images) for c in lr_crops(read_image(p).rgb, scale, RANGE_SIZES)]
    return range_table(activation_ranges(graph, crops))
