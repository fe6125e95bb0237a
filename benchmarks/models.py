"""What bench times: the product's backends (the registry's entries, on our export) and the
comparison points beside them (the plain export, eager PyTorch), one table of contenders.

Contenders (names used by `bench --backend`):
  <every registry backend that runs a file>   our export (fixed size, cached) on that backend:
                   ort, ort-cuda, ort-tensorrt, tensorrt (an engine built from it), openvino, ...
  ort-plain        the straightforward port (nn.Unfold/Fold + loop over runs) exported with a
                   plain `torch.onnx.export(dynamo=True)`: stand-in for exporting the official
                   code, on ONNX Runtime; openvino-plain: the same graph on OpenVINO
  torch            the registry's PyTorch backend: the straightforward port in eager PyTorch,
                   CPU (the official code's semantics); torch-cuda: the same on CUDA, FP32/FP16
  torch-ours       our module (static ops, the exported form) in eager PyTorch, CPU
  null             not a backend: the TensorRT runner's host side over a stand-in device that
                   takes --device-ms per batch (runtime/null.py), for capacity planning; in no
                   registry (its output is a pattern, never an image for a user)

`recursions` other than the trained 3 is for timing the paper's TM-k rows only (TM-k applies each
TransBlock k+1 times); 0 removes the recursive transformer entirely (the paper's "without
transformer" row), not just its blocks: unfold -> fold alone is not the identity (it sums 9
entries per pixel), so keeping it would time a different network. The 3x3 convs c2/c3 that
follow each stage stay (the paper does not say it removed them; they are ~1% of the MACs).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lbnet_deploy._version import __version__
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import COMPUTE, PRECISIONS, Form, ModelFacts
from lbnet_deploy.runtime import registry
from lbnet_deploy.runtime.backend import Runner
from lbnet_deploy.runtime.torch_ref import DTYPES
from lbnet_deploy.weights import cache_root

if TYPE_CHECKING:  # the model module imports torch; bench's parser must not
    from lbnet_deploy.model.lbnet import Ops

TRAINED_RECURSIONS = 3
# LR sizes of the scaling curve; whole-image 384 and 512 show where memory (and time) runs out
SCALING_WHOLE = (32, 48, 64, 96, 128, 160, 192, 256, 384, 512)
SCALING_TILED = (128, 192, 256, 384, 512)


def data_dir() -> Path:
    """Where bench finds its default images (Set5) and calibration photos (SunHays80):
    $LBNET_DATA_DIR, else ./data. Installed code never assumes a checkout's layout."""
    return Path(os.environ.get("LBNET_DATA_DIR", "data"))


@dataclass(frozen=True)
class Contender:
    """One thing bench can time: a registry backend on our export, on the plain export, or an
    eager PyTorch module (ops: the model's attention form, device: where torch runs it)."""

    name: str
    backend: str  # the registry entry that runs it ("null": none)
    graph: Literal["ours", "plain", "eager", "null"]
    ops: Ops = "reference"
    device: str = "cpu"


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        *(Contender(n, n, "ours") for n in registry.names("onnx") + registry.names("engine")),
        Contender("ort-plain", "ort", "plain"),
        Contender("openvino-plain", "openvino", "plain"),
        Contender("torch", "torch", "eager"),
        Contender("torch-ours", "torch", "eager", ops="static"),
        Contender("torch-cuda", "torch", "eager", device="cuda"),
        Contender("null", "null", "null", device="stand-in"),
    )
}
BACKENDS = tuple(CONTENDERS)


def off_cpu(backend: str) -> bool:
    """A contender that runs on a GPU or NPU (its time is not judged by the CPU's peak)."""
    c = CONTENDERS[backend]
    if c.graph == "null":
        return True
    return c.device != "cpu" or registry.get_backend(c.backend).gpu or c.backend.endswith("-npu")


def cuda_device() -> bool:
    """A CUDA device is here (torch's probe where torch is installed, else the CUDA layer's)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        from lbnet_deploy.runtime.cuda_layer import load_cuda

        try:
            load_cuda().facts(0)
        except LBNetError:
            return False
        return True


def _device_reason(c: Contender, precision: str) -> str | None:
    """Why the device a contender needs is absent here, or None. onnxruntime-gpu lists its CUDA
    and TensorRT providers with no GPU present, and OpenVINO names its devices: both asked."""
    needs_cuda = c.device == "cuda" or c.backend in ("ort-cuda", "ort-tensorrt")
    if needs_cuda and not cuda_device():
        return "no CUDA device"
    if c.backend == "tensorrt":
        from lbnet_deploy.runtime.cuda_layer import load_cuda
        from lbnet_deploy.runtime.trt_common import require_tensorrt

        try:
            require_tensorrt()
            load_cuda()
        except LBNetError as exc:
            return str(exc)
    if c.backend.startswith("ort-"):
        import onnxruntime as ort

        from lbnet_deploy.runtime.onnxrt import PROVIDERS

        provider = PROVIDERS[c.backend.removeprefix("ort-")]
        if provider not in ort.get_available_providers():
            return f"onnxruntime has no {provider}"
    if c.backend.startswith("openvino"):
        from lbnet_deploy.runtime.openvino import DEVICES, check_device, core

        try:
            check_device(core(), DEVICES[c.backend], precision)  # and BF16 where asked
        except LBNetError as exc:
            return str(exc)
    return None


def skip_reason(backend: str, precision: str) -> str | None:
    """Why a (contender, precision) cannot run here, or None when it can."""
    if backend not in CONTENDERS:
        raise LBNetError(f"unknown bench backend {backend!r}; choose from {', '.join(BACKENDS)}")
    c = CONTENDERS[backend]
    if c.graph == "null":  # computes nothing: one precision stands for all
        return None if precision == "fp32" else "the null backend is timed once, as fp32"
    entry = registry.get_backend(c.backend)
    if entry.missing():
        return f"needs {', '.join(entry.missing())}, which is not installed"
    reason = _device_reason(c, precision)
    if reason:
        return reason
    if c.graph == "eager":
        if precision == "fp16" and c.device == "cpu":
            return "eager FP16 is timed on CUDA only (CPU PyTorch has no fast FP16 path)"
        if precision not in DTYPES:  # what the torch runner runs
            return f"eager PyTorch is timed in FP32 and FP16 only, not {precision}"
        return None
    if precision not in entry.precisions:
        return f"the {c.backend} backend runs {', '.join(entry.precisions)} only"
    if c.graph == "plain" and precision not in ("fp32", *COMPUTE):
        return "the plain export is a comparison point in FP32 (and BF16 compute) only"
    if precision == "int8" and not calibration_images().is_dir():
        return f"no calibration photos at {calibration_images()} (set LBNET_CALIB_DIR)"
    return None


def calibration_images() -> Path:
    """Photos `calibrate` uses for bench's INT8 graphs: $LBNET_CALIB_DIR, else SunHays80 in
    `data_dir()` (never an evaluation set)."""
    return Path(os.environ.get("LBNET_CALIB_DIR", data_dir() / "SunHays80"))


def build_model(spec: str, recursions: int | None = None, random_weights: bool = False) -> Any:
    """Eval-mode LBNet for `spec`, with `recursions` TransBlock applications per stage.

    random_weights builds the variant untrained (timing only, for checkpoints we lack).
    """
    from torch import Tensor

    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.model.blocks import TransBlock
    from lbnet_deploy.model.checkpoint import load_model
    from lbnet_deploy.model.lbnet import LBNet

    class TimingLBNet(LBNet):
        """LBNet whose transformer stages vanish at recursions=0 (the paper's ablation)."""

        def transformer(self, block: TransBlock, x: Tensor) -> Tensor:
            if self.descriptor.recursions == 0:
                return x
            return super().transformer(block, x)

    if random_weights:
        from lbnet_deploy.weights import get_named_model

        named = get_named_model(spec)
        desc = describe(named.variant, named.scale, sha256=f"random-{named.name}")
        state = None
    else:
        trained, desc = load_model(spec)
        state = trained.state_dict()
    if recursions is not None:
        if recursions < 0:
            raise LBNetError(f"recursions must be >= 0, got {recursions}")
        desc = dataclasses.replace(desc, recursions=recursions)
    model = TimingLBNet(desc)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def _bench_cache() -> Path:
    return cache_root() / "bench"


def bench_onnx(
    spec: str,
    size: tuple[int, int],
    batch: int = 1,
    recursions: int = TRAINED_RECURSIONS,
    plain: bool = False,
    precision: str = "fp32",
    random_weights: bool = False,
    form: Form = "batched",
) -> Path:
    """A fixed-size ONNX file for one configuration, exported once and cached.

    The shipped configuration (recursions 3, our ops in any attention `form`; FP32 or FP16) is
    the same file `upscale` and `export` use (resolve.model_file's cache); the others, and INT8
    graphs calibrated with `calibrate`'s defaults, live beside their FP32 graph in
    `<cache>/bench/` or that cache. The plain export has no form of ours.
    """

    from lbnet_deploy.resolve import checkpoint_path, model_file
    from lbnet_deploy.weights import sha256_file

    if precision not in PRECISIONS:
        raise LBNetError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    shipped = recursions == TRAINED_RECURSIONS and not plain and not random_weights
    if shipped and precision in ("fp32", "fp16"):  # the product's own cached file
        return model_file(spec, input_size=size, batch=batch, precision=precision, form=form)
    if precision != "fp32":
        # made from the FP32 graph as a user would: `export --precision fp16`'s conversion,
        # `calibrate`'s defaults on the calibration photos
        fp32 = bench_onnx(spec, size, batch, recursions, plain, "fp32", random_weights, form)
        out = fp32.with_name(f"{fp32.stem}-{precision}.onnx")
        if out.is_file():
            return out
        if precision == "fp16":
            from lbnet_deploy.export.fp16 import write_fp16

            write_fp16(fp32, out)
        else:
            from lbnet_deploy.calibration.run import calibrate_file

            calibrate_file(fp32, calibration_images(), out)
        return out
    key = f"random-{spec}" if random_weights else sha256_file(checkpoint_path(spec))[:16]
    ops = "plain" if plain else f"ours-{form}"
    name = f"{key}-{size[0]}x{size[1]}-b{batch}-r{recursions}-{ops}-v{__version__}.onnx"
    out = _bench_cache() / name
    if not out.is_file():
        from lbnet_deploy.export.onnx_export import ExportOptions, export_onnx

        model = build_model(spec, recursions, random_weights)
        options = ExportOptions(input_size=size, batch=batch, reference_ops=plain, form=form)
        export_onnx(model, out, options)
    return out


def open_bench_runner(
    backend: str,
    spec: str,
    size: tuple[int, int],
    *,
    batch: int = 1,
    precision: str = "fp32",
    recursions: int = TRAINED_RECURSIONS,
    threads: int | None = None,
    random_weights: bool = False,
    form: Form | None = None,
    cuda_graph: bool = True,
    device_ms: float = 0.0,
) -> tuple[Runner, Path | None]:
    """(runner, the ONNX file it runs or None for eager PyTorch) for one configuration, opened
    by its registry entry as `upscale` opens it, on the graph of this configuration (an engine
    built from it for tensorrt, replaying CUDA graphs unless `cuda_graph` is False; BF16 as the
    entry's compute precision over the FP32 graph; null: the stand-in taking `device_ms`), in
    the attention `form` the entry exports for (or the one given)."""
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    reason = skip_reason(backend, precision)
    if reason:
        raise LBNetError(f"{backend} {precision}: {reason}")
    c = CONTENDERS[backend]
    if c.graph == "null":
        from lbnet_deploy.runtime.null import NullRunner

        return NullRunner(model_facts_of(spec).with_sizes(size, batch), device_ms), None
    if c.graph == "eager":
        model = build_model(spec, recursions, random_weights)
        return TorchRunner(
            model=model, device=c.device, threads=threads, ops=c.ops, precision=precision
        ), None
    entry = registry.get_backend(c.backend)
    compute = precision if precision in COMPUTE else "fp32"
    graph = "fp32" if compute != "fp32" else precision
    form = form or entry.form(compute)
    plain = c.graph == "plain"
    path = bench_onnx(spec, size, batch, recursions, plain, graph, random_weights, form)
    if entry.artifact == "engine":
        from lbnet_deploy.resolve import engine_file

        engine = engine_file(str(path), tile=size[0], batch=batch)
        return entry.open(engine, threads, compute, cuda_graph=cuda_graph), path
    return entry.open(path, threads, compute), path


def model_facts_of(spec: str) -> ModelFacts:
    """What a model name or checkpoint computes (variant, scale), without exporting it."""
    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.weights import get_named_model, is_model_name

    if is_model_name(spec):
        named = get_named_model(spec)
        return ModelFacts(describe(named.variant, named.scale))
    from lbnet_deploy.model.checkpoint import load_model

    return ModelFacts(load_model(spec)[1])


def threads_default() -> int:
    from .machine import cpus_available

    return int(os.environ.get("LBNET_BENCH_THREADS", 0)) or cpus_available()
