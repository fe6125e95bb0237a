"""ONNX -> TensorRT engine (`lbnet-deploy build`), for TensorRT 10.x and 11.x.

Precision lives in the graph (DEPLOY.md): FP16 graphs and Q/DQ INT8 graphs are built strongly
typed, with no precision flags, so every tensor keeps the type it had when we measured the
graph's accuracy (the FP32 LayerNorm islands of FP16 graphs, the float blocks of INT8 ones).
STRONGLY_TYPED exists from TensorRT 10.0 (NvInfer.h of 10.3, JetPack 6's version), the
precision flags are deprecated from 10.12 and gone in 11. `weakly_typed` is the fallback for a
10.x build that fails strongly typed: it sets the one flag the graph needs (FP16, or INT8 alone
for Q/DQ), and TensorRT may then pick lower precision than the graph says. The legacy path, an
FP32 graph plus `calibrate --trt-cache`'s calibration cache (implicit INT8), is weakly typed by
nature and offered only where the installed TensorRT still has calibrators (10.x).

Engines are fixed-shape: a dynamic graph gets one optimization profile with min = opt = max at
the requested size, so kernels are tuned for exactly the tiles the Upscaler sends.
Written against the tensorrt API rather than Polygraphy's loaders for the reasons in
runtime/engine.py (type-checked here against tensorrt-stubs, tested against a fake).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import IO_PEAK, io_kind
from lbnet_deploy.runtime.atomic import write_bytes_atomic, write_files_atomic
from lbnet_deploy.runtime.cuda_layer import GpuFacts, load_cuda
from lbnet_deploy.runtime.files import refuse_inputs_as_outputs
from lbnet_deploy.runtime.trt_common import (
    EngineFacts,
    cache_text,
    dims,
    read_cache,
    require_tensorrt,
    sidecar_path,
    trt_logger,
)
from lbnet_deploy.weights import sha256_file

from .onnx_io import GraphFacts, graph_facts, load_onnx, tensor_names

if TYPE_CHECKING:
    import tensorrt as trt

DEFAULT_WORKSPACE_MB = 2048

log = logging.getLogger("lbnet_deploy")


@dataclass(frozen=True)
class BuildOptions:
    input_size: tuple[int, int] | None = None  # required for a dynamic-size graph
    batch: int | None = None  # for a dynamic-batch graph (default 1)
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None  # read if present, written back after the build
    calibration_cache: Path | None = None  # implicit INT8 from an FP32 graph (TensorRT 10.x)
    # TensorRT runs FLOAT layers in TF32 by default (10-bit mantissa); off, an fp32 engine is
    # FP32 as its ONNX graph is and parity's FP32 tolerances hold. FP16 engines are the fast path.
    tf32: bool = False
    weakly_typed: bool = False  # precision flags instead of strong typing (10.x fallback)
    # a Jetson's deep-learning accelerator (trtexec --useDLACore N --allowGPUFallback): layers
    # DLA cannot run (attention's MatMul/Softmax, LayerNorm) fall back to the GPU
    dla_core: int | None = None


def engine_shape(graph_dims: list[int | None], options: BuildOptions) -> tuple[int, int, int, int]:
    """The one input shape the engine is built for: the graph's fixed dims, the options' for
    symbolic ones; options that contradict a fixed graph are an error, not silently ignored."""
    if len(graph_dims) != 4:
        raise LBNetError(f"expected a (B, 3, H, W) input, the graph has {graph_dims}")
    b, c, h, w = graph_dims
    if options.batch is not None and options.batch < 1:
        raise LBNetError(f"--batch must be at least 1, got {options.batch}")
    if options.input_size is not None and min(options.input_size) < 1:
        raise LBNetError(f"--input-size must be at least 1x1, got {options.input_size}")
    if options.input_size is not None and None not in (h, w) and (h, w) != options.input_size:
        raise LBNetError(
            f"the graph is fixed at {h}x{w}; --input-size {options.input_size[0]}x"
            f"{options.input_size[1]} needs a dynamic export (or omit it)"
        )
    if options.batch is not None and b is not None and b != options.batch:
        raise LBNetError(f"the graph's batch is fixed at {b}; --batch {options.batch} differs")
    if h is None or w is None:
        if options.input_size is None:
            raise LBNetError("the graph has a dynamic size: give the engine's --input-size HxW")
        h, w = options.input_size
    return b or options.batch or 1, c or 3, h, w


def precision_flags(precision: str, strong: bool, implicit_int8: bool) -> list[str]:
    """BuilderFlag names to set: none when strongly typed (precision is in the graph)."""
    if implicit_int8:
        return ["INT8"]
    if strong:
        return []
    # weakly typed: the flag must allow what the graph asks for; INT8 alone for Q/DQ graphs, so
    # the layers calibration kept float may not drop to FP16
    return {"fp16": ["FP16"], "int8": ["INT8"]}.get(precision, [])


def check_paths(engine_path: Path, options: BuildOptions, onnx_path: Path | None = None) -> None:
    """Before a build that takes minutes: folders exist, and no file written (engine, sidecar,
    timing cache) is one read (the graph, the calibration cache) or another written."""
    written = [engine_path, sidecar_path(engine_path), *filter(None, [options.timing_cache])]
    read = [p for p in (onnx_path, options.calibration_cache) if p is not None]
    refuse_inputs_as_outputs(written, read)
    if not engine_path.parent.is_dir():
        raise LBNetError(f"output folder does not exist: {engine_path.parent}")
    timing, calibration = options.timing_cache, options.calibration_cache
    if timing is not None and not timing.parent.is_dir():
        raise LBNetError(f"timing cache folder does not exist: {timing.parent}")
    if calibration is not None and not calibration.is_file():
        raise LBNetError(f"calibration cache not found: {calibration}")
    if options.workspace_mb < 1:
        raise LBNetError(f"--workspace must be at least 1 MB, got {options.workspace_mb}")


def build_engine(
    onnx_path: str | Path, engine_path: str | Path, options: BuildOptions
) -> EngineFacts:
    """Build, then write the engine and its sidecar whole (or neither) and the timing cache."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    graph = graph_facts(onnx_path)
    shape = engine_shape(graph.dims, options)
    lbnet = graph.lbnet
    precision = lbnet.get("precision", "fp32")
    if options.calibration_cache is not None and precision != "fp32":
        raise LBNetError(f"a calibration cache goes with an FP32 graph, {onnx_path} is {precision}")
    check_paths(engine_path, options, onnx_path)  # before a build that takes minutes
    if options.calibration_cache is not None:
        check_cache_range(options.calibration_cache, graph, onnx_path)
    tensorrt = require_tensorrt()
    gpu = load_cuda().facts(0)
    serialized, flags, strong, cache = _build(onnx_path, shape, precision, options)
    if options.calibration_cache is not None:
        precision = "int8"  # implicit INT8 from the FP32 graph
    facts = EngineFacts(
        lbnet={**lbnet, "precision": precision},
        tensorrt=tensorrt,
        gpu=gpu.name,
        compute_capability=gpu.compute_capability,
        onnx_sha256=sha256_file(onnx_path),
        input_shape=shape,
        precision=precision,
        strongly_typed=strong,
        builder_flags=tuple(flags),
        tf32=options.tf32,
        dla_core=options.dla_core,
        input_name=graph.input_name,
        output_name=graph.output_name,
        dtypes=graph.dtypes,
    )
    write_engine(engine_path, serialized, facts)
    if options.timing_cache is not None and cache:
        write_bytes_atomic(options.timing_cache, cache)
    return facts


def write_engine(path: Path, serialized: bytes, facts: EngineFacts) -> None:
    """Engine and sidecar written together: both complete before either is renamed into place,
    so a failure leaves an earlier engine and its sidecar as they were."""
    write_files_atomic({path: serialized, sidecar_path(path): facts.to_json().encode()})


def _build(
    onnx_path: Path,
    shape: tuple[int, int, int, int],
    precision: str,
    options: BuildOptions,
) -> tuple[bytes, list[str], bool, bytes]:
    """(serialized engine, builder flags set, strongly typed?, timing cache bytes)."""
    import tensorrt as trt

    implicit = options.calibration_cache is not None
    if implicit and not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise LBNetError(
            f"TensorRT {trt.__version__} has no calibrators (removed in 11): build the Q/DQ "
            "graph from `lbnet-deploy calibrate` instead of an FP32 graph with a cache"
        )
    if options.weakly_typed and int(trt.__version__.split(".")[0]) >= 11:
        # 11.x networks are always strongly typed: a weakly typed record would be false
        raise LBNetError(
            f"TensorRT {trt.__version__} builds strongly typed only: drop --weakly-typed"
        )
    strong = not (implicit or options.weakly_typed)  # calibrators need weak typing
    names = precision_flags(precision, strong, implicit)
    missing = [n for n in names if not hasattr(trt.BuilderFlag, n)]
    if missing:
        raise LBNetError(
            f"TensorRT {trt.__version__} has no {missing[0]} flag: build strongly typed"
        )
    logger = trt_logger()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        # an unreadable file fails without a parser error; TensorRT's log says why
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        why = "; ".join(errors) or "see TensorRT's log above"
        raise LBNetError(f"TensorRT's ONNX parser rejected {onnx_path}: {why}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb * 2**20)
    # each layer's types and ONNX nodes kept in the engine for its inspector (`info --layers`,
    # the GPU tests' precision checks); kernels are chosen as without it
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for name in names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):  # guarded as Polygraphy does
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.dla_core is not None:
        use_dla(builder, config, options.dla_core, precision, implicit)
    if implicit:
        assert options.calibration_cache is not None
        config.int8_calibrator = cache_calibrator(options.calibration_cache, onnx_path)
    network_input = network.get_input(0)
    if any(d < 0 for d in dims(network_input.shape)):
        profile = builder.create_optimization_profile()
        fixed = trt.Dims(list(shape))
        profile.set_shape(network_input.name, fixed, fixed, fixed)
        if config.add_optimization_profile(profile) < 0:
            raise LBNetError(f"TensorRT rejected the optimization profile {shape}")
        # NvInfer.h: "must be set if int8 calibration is used" with a dynamic input
        if implicit and not config.set_calibration_profile(profile):
            raise LBNetError(f"TensorRT rejected the calibration profile {shape}")
    use_timing_cache(config, options.timing_cache)
    log.info("building a TensorRT %s engine for %s ...", trt.__version__, shape)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LBNetError(f"TensorRT could not build an engine from {onnx_path} (log above)")
    tuned = config.get_timing_cache()
    return bytes(serialized), names, strong, bytes(tuned.serialize()) if tuned else b""


def use_dla(
    builder: trt.Builder, config: trt.IBuilderConfig, core: int, precision: str, implicit: bool
) -> None:
    """Layers on DLA core `core` by default, the GPU for the layers DLA cannot run."""
    import tensorrt as trt

    if precision == "fp32" and not implicit:  # DLA runs FP16 and INT8 layers only
        raise LBNetError("DLA runs FP16 and INT8 layers: build an fp16 or int8 graph on it")
    cores = builder.num_DLA_cores
    if not 0 <= core < cores:
        have = f"DLA cores 0..{cores - 1}" if cores else "no DLA"
        raise LBNetError(f"--dla-core {core}: this device has {have}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def use_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> None:
    """Start from the cache at `path` if TensorRT accepts it (one from another GPU or version is
    refused: then a fresh one, with a warning), else from an empty cache."""
    previous = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(previous) if previous else None
    if previous and (cache is None or not config.set_timing_cache(cache, ignore_mismatch=False)):
        log.warning("timing cache %s does not fit this GPU/TensorRT; starting afresh", path)
        cache = None
    if cache is None:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def check_cache_range(cache: Path, graph: GraphFacts, onnx_path: Path) -> None:
    """A calibration cache made on a graph of the other pixel range (lbnet.io: 0..1 or 0..255)
    would quantize the input in steps of 2 or clip it at 1/127: refused where the cache has the
    input's scale, whose x127 is the largest input calibration saw (symmetric INT8)."""
    scale = read_cache(cache)[1].get(graph.input_name)
    if scale is None:  # the first conv stayed float: its input has no scale to check
        return
    peak, seen = IO_PEAK[io_kind(graph.lbnet, str(onnx_path))], scale * 127
    if not peak / 4 <= seen <= peak * 4:
        raise LBNetError(
            f"{cache} was calibrated on inputs up to {seen:.3g}, {onnx_path} takes 0..{peak:g} "
            "(lbnet.io): a cache of a graph in the other pixel range; calibrate this graph"
        )


def cache_calibrator(path: Path, onnx_path: Path) -> trt.IInt8Calibrator:
    """An IInt8EntropyCalibrator2 that only replays a calibration cache (`calibrate --trt-cache`):
    TensorRT reads the cache first and never asks for a batch when it covers the network. The
    cache is restamped with this TensorRT's version (TensorRT skips a cache made for another),
    and how many of the graph's tensors it covers is reported."""
    import tensorrt as trt

    _, scales = read_cache(path)  # its existence is checked before the build (check_paths)
    data = cache_text(scales, trt.__version__).encode("ascii")
    tensors = tensor_names(load_onnx(onnx_path))
    unknown = sorted(set(scales) - tensors)
    log.info(
        "calibration cache %s: scales for %d of the graph's %d tensors%s",
        path, len(set(scales) & tensors), len(tensors),
        f"; {len(unknown)} name no tensor of it (e.g. {unknown[0]!r})" if unknown else "",
    )  # fmt: skip

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            # no images here: an empty batch list ends calibration, and TensorRT then reports
            # the tensors the cache does not cover
            return []

        def read_calibration_cache(self) -> bytes:
            return data

        def write_calibration_cache(self, cache: object) -> None:
            return None

    return CacheCalibrator()


__all__ = ["BuildOptions", "EngineFacts", "GpuFacts", "build_engine"]
