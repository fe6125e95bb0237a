"""The Python API: the few calls an export or serving script needs, re-exported by the package
root (`import lbnet_deploy as lb`). Each is a thin, typed call into the library the commands use;
heavy imports happen inside the calls, so `import lbnet_deploy` stays cheap and a serving script
needs neither torch nor onnx.

    import lbnet_deploy as lb

    model, facts = lb.load_checkpoint("lbnet-t-x4")               # torch
    lb.export_onnx(model, "t4.onnx", input_size=(96, 96))               # ONNX, fixed 96x96
    lb.build_engine("t4.onnx", "t4.plan")                          # on the GPU machine
    runner = lb.open_runner("t4.onnx")                             # any backend of the registry
    sr = lb.upscale(lr_rgb_uint8, runner)                          # HxWx3 -> sHxsWx3 uint8
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbnet_deploy.metadata import IO, IO_FOR_TOOLS

if TYPE_CHECKING:
    import numpy as np

    from lbnet_deploy.calibration.run import CalibrationReport
    from lbnet_deploy.descriptor import ModelDescriptor
    from lbnet_deploy.evaluate import EvalResult
    from lbnet_deploy.model.lbnet import LBNet
    from lbnet_deploy.runtime.backend import Runner
    from lbnet_deploy.runtime.trt_common import EngineFacts


def load_checkpoint(spec: str | Path) -> tuple[LBNet, ModelDescriptor]:
    """A model name (`lbnet-t-x4`, resolved through $LBNET_WEIGHTS_DIR, the cache or a
    verified download) or a checkpoint file -> the eval-mode PyTorch model and its descriptor."""
    from lbnet_deploy.model.checkpoint import load_model

    return load_model(spec)


def export_onnx(
    model: LBNet | str | Path,
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = (128, 128),
    batch: int | None = 1,
    precision: str = "fp32",
    io: IO = IO_FOR_TOOLS,
) -> Path:
    """Export to ONNX as `lbnet-deploy export` does: input_size/batch None = dynamic;
    precision "fp16" converts with the measured FP32 islands; io "unit" (default) takes and
    gives 0..1, "255" the paper's 0..255 (every runner of ours takes both). Returns the path."""
    import tempfile

    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.export.fp16 import write_fp16
    from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx
    from lbnet_deploy.metadata import EXPORTED

    if precision not in EXPORTED:
        raise LBNetError(f"precision must be fp32 or fp16 (INT8: `calibrate`), not {precision!r}")
    if not hasattr(model, "state_dict"):
        model, _ = load_checkpoint(model)  # type: ignore[arg-type]
    options = ExportOptions(input_size=input_size, batch=batch, io=io)
    if precision == "fp32":
        return export_onnx(model, path, options).path  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", options).path  # type: ignore[arg-type]
        write_fp16(fp32, path)
    return Path(path)


def calibrate(
    fp32_onnx: str | Path, images: str | Path, output: str | Path, **options: Any
) -> CalibrationReport:
    """INT8 Q/DQ graph from an FP32 export and a folder of photos (never an evaluation set);
    `options` as `calibration.run.calibrate_file` (method: minmax, entropy or percentile as on
    the command line; samples, max_psnr_drop, trt_cache)."""
    from lbnet_deploy.calibration.run import METHODS, calibrate_file

    if "method" in options:
        options["method"] = METHODS.get(str(options["method"]).lower(), options["method"])
    return calibrate_file(fp32_onnx, images, output, **options)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
    **options: Any,
) -> EngineFacts:
    """A fixed-size TensorRT engine and its sidecar (needs TensorRT and a GPU); `options` as
    `export.engine_build.BuildOptions` (workspace_mb, timing_cache, tf32, ...)."""
    from lbnet_deploy.export.engine_build import BuildOptions
    from lbnet_deploy.export.engine_build import build_engine as build

    for key in ("timing_cache", "calibration_cache"):  # paths, as the CLI passes them
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return build(onnx_path, engine_path, BuildOptions(input_size, batch, **options))


def open_runner(spec: str | Path, backend: str = "ort", **options: Any) -> Runner:
    """A runner for a name, checkpoint, .onnx or engine on a backend of `runtime.registry`, or
    "auto" (the fastest installed CPU backend here, measured once; `upscale`'s default)
    (`options`: threads, tile, batch, precision, scale, cuda_graph); close it with `close()`
    where it has one (TensorRT)."""
    from lbnet_deploy.loaders import open_runner as open_chain
    from lbnet_deploy.runtime.registry import AUTO

    if backend == AUTO:
        from lbnet_deploy.benchmarks.choose import open_auto

        return open_auto(str(spec), **options)[0]
    return open_chain(str(spec), backend, **options)


def upscale(
    image: np.ndarray, model: Runner | str | Path, *, memory_budget_mb: int = 2048, **tiling: Any
) -> np.ndarray:
    """uint8 H x W x 3 RGB -> uint8 sH x sW x 3 through `model` (a runner, or anything
    `open_runner` takes), tiled within the budget; `tiling`: tile, overlap, batch, merge."""
    from lbnet_deploy.runtime.upscaler import Upscaler

    runner = open_runner(model) if isinstance(model, str | Path) else model
    return Upscaler(runner, memory_budget_mb=memory_budget_mb, **tiling).upscale(image)


def upscale_file(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    model: Runner | str | Path,
    *,
    output_format: str = "png",
    quality: int | None = None,
    suffix: str = "",
    **tiling: Any,
) -> int:
    """`lbnet-deploy upscale` as a call: image files or folders -> `output_dir/<name><suffix>`
    in `output_format` (png, jpg, webp, tiff; `quality` for jpg/webp); returns how many failed
    (each reported on stderr)."""
    from lbnet_deploy.runtime.files import expand_inputs, output_paths, upscale_files
    from lbnet_deploy.runtime.images import OutputFormat
    from lbnet_deploy.runtime.upscaler import Upscaler

    output = OutputFormat(output_format, quality)
    paths = expand_inputs([str(i) for i in inputs])
    outputs = output_paths(paths, Path(output_dir), output, suffix)
    runner = open_runner(model) if isinstance(model, str | Path) else model
    summary = upscale_files(
        Upscaler(runner, **tiling), paths, Path(output_dir), False, outputs, output
    )
    return summary.failed


def evaluate_dataset(
    model: Runner | str | Path, dataset: str | Path, *, memory_budget_mb: int | None = None
) -> EvalResult:
    """PSNR/SSIM on an EDSR-layout dataset with the paper's protocol (`lbnet-deploy eval`);
    the budget None: 75% of available memory, re-read per image."""
    from lbnet_deploy.evaluate import evaluate as run_eval
    from lbnet_deploy.evaluate import load_samples
    from lbnet_deploy.runtime.upscaler import Upscaler

    runner = open_runner(model) if isinstance(model, str | Path) else model
    upscaler = Upscaler(runner, memory_budget_mb=memory_budget_mb)
    samples = load_samples(Path(dataset), runner.scale)
    name = (
        str(model)
        if isinstance(model, str | Path)
        else str(runner.describe().get("path", "runner"))
    )
    return run_eval(
        upscaler, samples, model=name, variant=runner.model_facts.variant,
        dataset=Path(dataset).resolve().name, progress=False,
    )  # fmt: skip
