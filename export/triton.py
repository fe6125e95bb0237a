"""A Triton Inference Server model folder for an engine or an ONNX graph (`lbnet-deploy triton`).

Layout (DEPLOY.md): `<repository>/<name>/config.pbtxt` and `<repository>/<name>/<version>/
model.plan` (platform tensorrt_plan) or `model.onnx` (onnxruntime_onnx). Triton serves the model
as it is: one request is one (batch of) LR tile(s) of the model's input size; tiling and merging
stay with the client (our Upscaler). A fixed batch dimension is part of `dims` with
`max_batch_size: 0`; a dynamic one becomes Triton's batch dimension with dynamic batching.
The model's lbnet.* facts travel as config `parameters`, so a client can read the scale.

The config is written as protobuf text by hand: Triton's ModelConfig message is only
distributed inside tritonclient[grpc] (a test dependency here, used to parse what we write).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.runtime.atomic import default_dir_mode, write_text_atomic
from lbnet_deploy.runtime.trt_common import ENGINE_SUFFIXES, EngineFacts, read_facts

from .onnx_io import graph_facts

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}  # the I/O types we export


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: list[int]  # -1 where symbolic; batch included


@dataclass(frozen=True)
class ModelIO:
    platform: str
    filename: str
    lbnet: dict[str, str]
    inputs: list[Tensor]
    outputs: list[Tensor]
    engine: EngineFacts | None = None  # the sidecar, for a plan


def model_io(path: Path) -> ModelIO:
    """Platform, file name, facts and I/O of an engine (from its sidecar) or an ONNX graph."""
    if path.suffix in ENGINE_SUFFIXES:
        facts = read_facts(path)
        b, c, h, w = facts.input_shape
        s = int(facts.lbnet["scale"])
        return ModelIO(
            "tensorrt_plan", "model.plan", facts.lbnet,
            [Tensor(facts.input_name, TRITON_TYPES[facts.dtypes[0]], [b, c, h, w])],
            [Tensor(facts.output_name, TRITON_TYPES[facts.dtypes[1]], [b, c, s * h, s * w])],
            facts,
        )  # fmt: skip
    if path.suffix != ".onnx":
        raise LBNetError(f"{path}: give an engine ({', '.join(ENGINE_SUFFIXES)}) or an .onnx file")
    graph = graph_facts(path)

    def tensor(name: str, dims: list[int | None], dtype: str) -> Tensor:
        if len(dims) != 4:
            raise LBNetError(f"{path}: tensor {name!r} has no (B, 3, H, W) shape")
        if dtype not in TRITON_TYPES:
            raise LBNetError(f"{path}: tensor {name!r} is {dtype}, not float32/float16")
        return Tensor(name, TRITON_TYPES[dtype], [-1 if d is None else d for d in dims])

    return ModelIO(
        "onnxruntime_onnx", "model.onnx", graph.lbnet,
        [tensor(graph.input_name, graph.dims, graph.dtypes[0])],
        [tensor(graph.output_name, graph.output_dims, graph.dtypes[1])],
    )  # fmt: skip


def config_text(io: ModelIO, name: str, max_batch: int, instances: int, kind: str) -> str:
    """config.pbtxt for `io`; a dynamic batch dimension becomes Triton's (up to `max_batch`)."""
    batched = all(t.dims[0] == -1 for t in io.inputs + io.outputs)

    def block(tensors: list[Tensor]) -> str:
        items = []
        for t in tensors:
            dims = ", ".join(str(d) for d in (t.dims[1:] if batched else t.dims))
            items.append(f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {dims} ] }}')
        return ",\n".join(items)

    lines = [
        f'name: "{name}"',
        f'platform: "{io.platform}"',
        f"max_batch_size: {max_batch if batched else 0}",
        f"input [\n{block(io.inputs)}\n]",
        f"output [\n{block(io.outputs)}\n]",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
    ]
    if batched:
        lines.append("dynamic_batching { }")
    for key, value in io.lbnet.items():
        text = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'parameters {{ key: "lbnet.{key}" value: {{ string_value: "{text}" }} }}')
    return "\n".join(lines) + "\n"


def write_repository(
    model: str | Path,
    io: ModelIO,
    repository: str | Path,
    name: str,
    *,
    version: int = 1,
    max_batch: int = 8,
    instances: int = 1,
    kind: str = "KIND_GPU",
) -> Path:
    """Create `<repository>/<name>/` for `model` (described by `io = model_io(model)`) whole:
    assembled beside it, then renamed into place."""
    model, repository = Path(model), Path(repository)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name or ""):
        # a folder name that is also a quotable config.pbtxt string: no quotes, slashes, spaces
        raise LBNetError(
            f"model name {name!r} must be a plain folder name: letters, digits, '_', '-', '.'"
        )
    if version < 1 or max_batch < 1 or instances < 1:
        raise LBNetError("--version, --max-batch and --instances must be at least 1")
    if not repository.is_dir():
        raise LBNetError(f"model repository folder does not exist: {repository}")
    target = repository / name
    if target.exists():
        raise LBNetError(f"{target} already exists: remove it or choose another --name")
    staging = Path(tempfile.mkdtemp(dir=repository, prefix=f".{name}."))
    try:
        staging.chmod(default_dir_mode())  # mkdtemp's 0700 would lock out the Triton user
        config = config_text(io, name, max_batch, instances, kind)
        write_text_atomic(staging / "config.pbtxt", config)
        (staging / str(version)).mkdir()
        shutil.copyfile(model, staging / str(version) / io.filename)
        os.replace(staging, target)
    except OSError as exc:
        raise LBNetError(f"cannot write {target} ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
