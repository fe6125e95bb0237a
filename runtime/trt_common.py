"""What the TensorRT side needs besides the runner: the check that TensorRT is there (CUDA and
GPU facts are the CUDA layer's, cuda_layer.py), the engine's JSON sidecar (`EngineFacts`: what
it computes and what it was built for), the compatibility check, one logger, and `info` for an
engine. The engine builder (export/engine_build.py) and the runner (runtime/engine.py) both use
these; nothing here needs TensorRT to import, so `info` and `triton` read sidecars on any machine.

An engine is opaque and tied to one TensorRT version and GPU, so `lbnet-deploy build` writes a
JSON sidecar beside it (`model.plan.json`): the model's facts (as in the ONNX metadata), the
TensorRT version, GPU and compute capability it was built for, the ONNX file's hash and the
input shape. The runner refuses a mismatched engine with that one line, before TensorRT would
fail to deserialize it.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts, model_facts

from .cuda_layer import GpuFacts

if TYPE_CHECKING:
    import tensorrt as trt

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # what names a TensorRT engine file
INSTALL_HINT = "install lbnet-deploy[trt] on a machine with an NVIDIA GPU"


def require_tensorrt() -> str:
    """The installed TensorRT's version, or a one-line error. Callers then `import tensorrt`
    inside the function, so every use is checked against tensorrt-stubs by mypy.

    tensorrt-stubs installs an importable `tensorrt` namespace with no library behind it, so
    the test is for `Builder`, not for importability.
    """
    try:
        import tensorrt
    except ImportError:
        raise LBNetError(f"TensorRT is not installed ({INSTALL_HINT})") from None
    if not hasattr(tensorrt, "Builder"):
        raise LBNetError(f"TensorRT is not installed, only its type stubs ({INSTALL_HINT})")
    return str(tensorrt.__version__)


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """TensorRT's Dims as a tuple (the stubs declare no __iter__)."""
    return tuple(int(shape[i]) for i in range(len(shape)))


@dataclass(frozen=True)
class EngineFacts:
    """The sidecar: what the engine computes and what it was built for."""

    lbnet: dict[str, str]  # the ONNX file's lbnet.* metadata, prefix dropped
    tensorrt: str
    gpu: str
    compute_capability: str
    onnx_sha256: str
    input_shape: tuple[int, ...]  # (B, 3, H, W)
    precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...] = field(default=())  # precision flags (weakly typed only)
    tf32: bool = False
    dla_core: int | None = None  # the DLA core it runs on (the GPU where None)
    input_name: str = "lr"
    output_name: str = "sr"
    dtypes: tuple[str, str] = ("float32", "float32")  # input's, output's (numpy names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "sidecar") -> EngineFacts:
        """Parse and check a sidecar: every field has its type, the model facts are LBNet's
        (`metadata.model_facts`), the shape is (B, 3, H, W), the I/O types are float."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON {type(raw).__name__}, not an object")
        known = {f.name: f for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}  # a newer tool's extra facts
        for key in ("input_shape", "builder_flags", "dtypes"):  # JSON has lists, we keep tuples
            if key in raw:
                if not isinstance(raw[key], list):
                    raise ValueError(f"{key} is not a list")
                raw[key] = tuple(raw[key])
        facts = cls(**raw)
        for name in ("tensorrt", "gpu", "compute_capability", "onnx_sha256", "precision",
                     "input_name", "output_name"):  # fmt: skip
            if not isinstance(getattr(facts, name), str):
                raise ValueError(f"{name} is not a string")
        for name in ("strongly_typed", "tf32"):
            if not isinstance(getattr(facts, name), bool):
                raise ValueError(f"{name} is not true or false")
        if facts.dla_core is not None and (type(facts.dla_core) is not int or facts.dla_core < 0):
            raise ValueError(f"dla_core {facts.dla_core!r} is not a core number")
        if not all(isinstance(flag, str) for flag in facts.builder_flags):
            raise ValueError("builder_flags are not names")
        shape = facts.input_shape
        if len(shape) != 4 or shape[1] != 3 or not all(type(d) is int and d > 0 for d in shape):
            raise ValueError(f"input_shape {list(shape)} is not (batch, 3, height, width)")
        if not all(d in ("float32", "float16") for d in facts.dtypes) or len(facts.dtypes) != 2:
            raise ValueError(f"dtypes {list(facts.dtypes)} are not float32/float16 in and out")
        model_facts(facts.lbnet, source)  # raises its own one-line LBNetError
        return facts

    @property
    def model(self) -> ModelFacts:
        """The model facts, with the engine's fixed input size and batch."""
        b, _, h, w = self.input_shape
        return model_facts(self.lbnet, "sidecar").with_sizes((h, w), b)


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_facts(engine: str | Path) -> EngineFacts:
    """The engine's sidecar, or a one-line error naming what is wrong."""
    engine, side = Path(engine), sidecar_path(engine)
    if not engine.is_file():
        raise LBNetError(f"engine file not found: {engine}")
    if engine.stat().st_size == 0:
        raise LBNetError(f"{engine} is empty (0 bytes)")
    if not side.is_file():
        raise LBNetError(
            f"{engine} has no {side.name} beside it: build engines with `lbnet-deploy build`, "
            "which records the model and the TensorRT version and GPU they are for"
        )
    try:
        return EngineFacts.from_json(side.read_text(), str(side))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError) as exc:
        raise LBNetError(f"{side} is not an lbnet-deploy engine description ({exc})") from None


def check_compatible(facts: EngineFacts, engine: Path, tensorrt: str, gpu: GpuFacts) -> None:
    """Engines deserialize only on the TensorRT version and GPU architecture they were built
    for; say so before TensorRT fails with a less readable message."""
    if facts.tensorrt != tensorrt:  # TensorRT refuses engines across patch releases too
        raise LBNetError(
            f"{engine} was built with TensorRT {facts.tensorrt}, this is {tensorrt}: "
            "rebuild it with `lbnet-deploy build`"
        )
    if facts.compute_capability != gpu.compute_capability:
        raise LBNetError(
            f"{engine} was built for a GPU of compute capability {facts.compute_capability} "
            f"({facts.gpu}), this {gpu.name} is {gpu.compute_capability}: rebuild it here"
        )


@functools.cache
def trt_logger() -> trt.ILogger:
    """One logger per process: TensorRT warns when objects alive together use different ones."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def engine_info(path: str | Path) -> str:
    """`lbnet-deploy info` for an engine: its sidecar, readable without TensorRT."""
    facts = read_facts(path)
    lines = [f"{path}: {Path(path).stat().st_size / 1e6:.2f} MB TensorRT engine"]
    lines.append(f"  model: {facts.lbnet.get('variant')} x{facts.lbnet.get('scale')}")
    for key, value in asdict(facts).items():
        if key != "lbnet":
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)


# --- the engine inspector's JSON (`TensorRTRunner.layers`, `info --layers`) -------------------
# Read as NVIDIA's trt-engine-explorer reads it (tools/experimental/trt-engine-explorer, trex):
# {"Layers": [{"Name", "LayerType", "ParameterType", "Inputs"/"Outputs": [{"Name", "Dimensions",
# "Format/Datatype": "Row major linear FP32" | "Channel major FP16 format where ..." | kgen's
# "Half", ...}], "Weights": {"Type": "Int8", "Count"}, "Metadata": "[ONNX Layer: /conv/Conv]"
# joined by \x1e or \x1f (both seen) for fused layers}, ...], "Bindings": [...]}. An engine
# built without ProfilingVerbosity.DETAILED lists names only: {"Layers": ["name", ...]}.
_PRECISION_WORDS = {
    "fp32": "fp32", "float": "fp32", "fp16": "fp16", "half": "fp16", "bfloat16": "bf16",
    "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64", "fp8": "fp8",
    "int4": "int4", "fp4": "fp4", "bool": "bool",
}  # fmt: skip
_ONNX_NODE = re.compile(r"\[ONNX Layer: (.*?)(?: \|[^\]]*)?\]")


def tensor_precision(text: str) -> str:
    """The data type a "Format/Datatype" or weights "Type" names ("?" where none)."""
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word in _PRECISION_WORDS:
            return _PRECISION_WORDS[word]
    return "?"


@dataclass(frozen=True)
class EngineLayer:
    """One layer of a built engine: what it is, the types of its tensors and weights, and the
    ONNX nodes TensorRT fused into it."""

    name: str
    kind: str  # ParameterType (Convolution, ...) where given, else LayerType (kgen, Myelin, ...)
    inputs: tuple[str, ...]  # precisions, in order
    outputs: tuple[str, ...]
    weights: str | None  # precision of its weights, where it has any
    onnx_nodes: tuple[str, ...]

    @property
    def precision(self) -> str:
        """What it computes in, as trex reads it: the type of its first input."""
        return self.inputs[0] if self.inputs else (self.outputs[:1] or ("?",))[0]


def parse_layers(text: str, source: str) -> list[EngineLayer]:
    """The inspector's JSON as EngineLayers, or a one-line error saying why it cannot be."""
    try:
        raw = json.loads(text)
        entries = raw["Layers"]
    except (ValueError, TypeError, KeyError):
        raise LBNetError(
            f"{source}: TensorRT's engine information is not the JSON expected"
        ) from None
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise LBNetError(
            f"{source} has no detailed layer information (built without ProfilingVerbosity."
            "DETAILED): rebuild it with `lbnet-deploy build`"
        )
    layers = []
    for entry in entries:
        metadata = str(entry.get("Metadata") or "")
        nodes = tuple(_ONNX_NODE.findall(metadata)) or tuple(str(entry["Name"]).split(" + "))
        weights = entry.get("Weights")
        layers.append(
            EngineLayer(
                name=str(entry["Name"]),
                kind=str(entry.get("ParameterType") or entry.get("LayerType", "?")),
                inputs=tuple(tensor_precision(t["Format/Datatype"]) for t in entry["Inputs"]),
                outputs=tuple(tensor_precision(t["Format/Datatype"]) for t in entry["Outputs"]),
                weights=tensor_precision(weights["Type"]) if isinstance(weights, dict) else None,
                onnx_nodes=nodes,
            )
        )
    return layers


def layer_table(layers: list[EngineLayer]) -> str:
    """`info --layers`: one line per layer, then how many compute in each precision."""
    lines = []
    for layer in layers:
        types = f"{','.join(layer.inputs) or '-'} -> {','.join(layer.outputs) or '-'}"
        weights = f" weights {layer.weights}" if layer.weights else ""
        nodes = ", ".join(layer.onnx_nodes[:3]) + (" ..." if len(layer.onnx_nodes) > 3 else "")
        lines.append(f"  {layer.kind:<14} {types:<22}{weights:<14} {nodes}")
    counts = Counter(layer.precision for layer in layers)
    summary = ", ".join(f"{n} {p}" for p, n in counts.most_common())
    return "\n".join(
        [f"{len(layers)} layers (by the type of their first input: {summary})", *lines]
    )


# --- the TensorRT calibration cache format (`calibrate --trt-cache` writes it, builds replay it)
# `TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2`, then `<tensor name>: <8 hex digits: the
# float32 scale, big-endian>`; NV_TENSORRT_VERSION is major*1000+minor*100+patch before 10 and
# major*10000+minor*100+patch from 10 on. Written by hand: no package writes it without TensorRT.
ALGORITHM = "EntropyCalibration2"


def trt_version_number(version: str) -> int:
    """'10.3.0' -> 100300, '8.6.1' -> 8601 (TensorRT's NV_TENSORRT_VERSION)."""
    try:
        major, minor, patch = (int(p) for p in ([*version.split("."), "0", "0"])[:3])
    except ValueError:
        raise LBNetError(f"TensorRT version must look like 10.3.0, got {version!r}") from None
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def cache_text(scales: dict[str, float], trt_version: str) -> str:
    """The cache's text for `trt_version`: TensorRT skips a cache whose header names another
    version (NVIDIA/TensorRT#1378, #3612), so an engine build restamps ours with its own."""
    lines = [f"TRT-{trt_version_number(trt_version)}-{ALGORITHM}"]
    for name, scale in scales.items():
        if not np.isfinite(scale) or scale <= 0:
            raise LBNetError(f"calibration scale of {name!r} is {scale}: must be positive")
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def read_cache(path: str | Path) -> tuple[int, dict[str, float]]:
    """(TensorRT version number, tensor -> scale) from a calibration cache."""
    lines = Path(path).read_text(encoding="ascii").splitlines()
    head = lines[0].split("-") if lines else []
    if len(head) != 3 or head[0] != "TRT" or not head[1].isdigit():
        raise LBNetError(f"{path} is not a TensorRT calibration cache (header {lines[:1]})")
    scales = {}
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        if not name or len(value) != 8:
            raise LBNetError(f"{path}: malformed cache line {line!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return int(head[1]), scales
