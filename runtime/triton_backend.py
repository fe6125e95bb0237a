"""The two Python-backend models of a Triton image repository (`lbnet-deploy triton --images`),
run inside Triton's Python backend, where `triton_python_backend_utils` exists.

- `TileModel`: batches of float32 LR tiles (B, 3, h, w) -> SR tiles, through our own runner
  (ONNX Runtime or OpenVINO, opened by its registry entry) on the graph in its version folder.
  Triton's dynamic batcher hands it the requests of concurrent images in one `execute`; each
  request still runs as one call of the runner with exactly its own tiles (the Upscaler's
  `batch`), as in `upscale`, because ONNX Runtime's batched kernels change the last bits of a
  tile's output with the tiles around it (measured: up to 4.7e-4, enough to flip rounded
  pixels) and were no faster on this CPU (4 tiles of 96x96 in one run 9.6-12.5 s, one by one
  5.5-10.3 s). So the server's output equals `upscale`'s with the same settings bit for bit.
- `ImageModel`: one uint8 H x W x 3 image in, its uint8 sH x sW x 3 result out. It plans and
  merges with our `Upscaler` within the memory budget of its config, sending the tiles to the
  tile model with BLS (`pb_utils.InferenceRequest(...).exec()`), so the tiles of concurrent
  images meet in the tile model's batches. A request may set `tile`, `overlap`, `merge` and
  `batch` as parameters (the client's `--tile` etc.); the budget is the server's.

Every failure is one error response with one line; the model keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts, model_facts

from .backend import GraphRunner, describe_facts, infer_file
from .tiling import MERGES
from .upscaler import Upscaler

# tensor names and types of the two models (the client and export/triton.py use these)
TILE_INPUT, TILE_OUTPUT = "lr", "sr"
IMAGE_INPUT, IMAGE_OUTPUT = "image", "image_sr"
NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}
# what a request may set, and the type each must have
REQUEST_SETTINGS = {"tile": int, "overlap": int, "merge": str, "batch": int}


def parameters(config: dict[str, Any]) -> dict[str, str]:
    """A model config's `parameters` as plain strings."""
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def lbnet_facts(params: dict[str, str], source: str) -> ModelFacts:
    """The lbnet.* parameters of a config -> checked ModelFacts (also used by the client)."""
    return model_facts({k[6:]: v for k, v in params.items() if k.startswith("lbnet.")}, source)


def one_line(exc: BaseException) -> str:
    """An exception as the one line an error response carries."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, LBNetError) else f"{type(exc).__name__}: {first}"


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils  # only inside Triton's Python backend

    return pb_utils


def answer(requests: list[Any], outputs: Callable[[Any, Any], list[Any]]) -> list[Any]:
    """One response per request: `outputs(pb_utils, request)`'s tensors, or one error line (a
    failure is that request's answer; the model keeps serving)."""
    pb = _pb()
    responses = []
    for request in requests:
        try:
            responses.append(pb.InferenceResponse(outputs(pb, request)))
        except Exception as exc:
            responses.append(pb.InferenceResponse(error=pb.TritonError(one_line(exc))))
    return responses


class TileModel:
    """TritonPythonModel of the tile model (see the module docstring)."""

    def initialize(self, args: dict[str, str]) -> None:
        from .onnxrt import share_cores
        from .registry import get_backend

        share_cores()  # a server's processes share the cores (onnxrt._spin)
        config = json.loads(args["model_config"])
        params = parameters(config)
        folder = Path(args["model_repository"]) / args["model_version"]
        threads = int(params.get("threads", "0")) or None
        backend = get_backend(params.get("backend", "ort"))
        self.runner = backend.open(folder / "model.onnx", threads, params.get("compute", "fp32"))

    def execute(self, requests: list[Any]) -> list[Any]:
        def outputs(pb: Any, request: Any) -> list[Any]:
            lr = pb.get_input_tensor_by_name(request, TILE_INPUT).as_numpy()
            return [pb.Tensor(TILE_OUTPUT, self.runner.infer(lr))]

        return answer(requests, outputs)


class TileModelRunner(GraphRunner):
    """Shared part of the runners whose tiles go to a repository's tile model (by BLS inside
    the server, by gRPC from a client): the model's facts from an image model's parameters
    and, for a tile model that batches dynamically, the most tiles it takes in one request
    (`tile_max_batch`, its max_batch_size; Triton refuses more): larger batches go in slices
    of that many, unpadded (a fixed-batch engine's are padded to its batch, as before)."""

    def read_tile_model(self, params: dict[str, str], source: str) -> None:
        self.facts = lbnet_facts(params, source)
        limit = params.get("tile_max_batch")  # absent in repositories written before it
        self.batch_limit = int(limit) if limit else None

    @property
    def max_batch(self) -> int | None:
        return self.facts.batch or self.batch_limit

    def infer(self, batch: np.ndarray) -> np.ndarray:
        step, fixed = self.max_batch or len(batch) or 1, self.facts.batch
        parts = [batch[i : i + step] for i in range(0, max(len(batch), 1), step)]
        outs = [infer_file(self._run, p, self.facts, self.input_size, fixed) for p in parts]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)


class BlsTileRunner(TileModelRunner):
    """A `Runner` whose tiles run on the tile model through BLS requests; sizes and batch are
    the tile model's (a fixed-size engine's shape and batch, else any size, up to its
    max_batch_size), from the parameters."""

    def __init__(self, params: dict[str, str], source: str) -> None:
        self.read_tile_model(params, source)
        self.model = params["tile_model"]
        self.names = params.get("tile_input", TILE_INPUT), params.get("tile_output", TILE_OUTPUT)
        self.dtype = NUMPY_TYPES[params.get("tile_type", "TYPE_FP32")]

    def describe(self) -> dict[str, object]:
        return describe_facts(self.facts, "triton-bls", tile_model=self.model)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        pb = _pb()
        name_in, name_out = self.names
        request = pb.InferenceRequest(
            model_name=self.model,
            requested_output_names=[name_out],
            inputs=[pb.Tensor(name_in, np.ascontiguousarray(batch, dtype=self.dtype))],
        )
        response = request.exec()
        if response.has_error():
            raise LBNetError(f"tile model {self.model}: {response.error().message()}")
        out = pb.get_output_tensor_by_name(response, name_out).as_numpy()
        return np.asarray(out, dtype=np.float32)


def request_settings(text: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The tiling settings of one request: its JSON parameters over the config's defaults;
    unknown keys and values of the wrong type are one line."""
    given = json.loads(text or "{}")
    settings = dict(defaults)
    for key, value in given.items():
        kind = REQUEST_SETTINGS.get(key)
        if kind is None:
            raise LBNetError(
                f"unknown request parameter {key!r}; known: {', '.join(REQUEST_SETTINGS)}"
            )
        if type(value) is not kind:  # bool is an int to isinstance
            raise LBNetError(f"request parameter {key} must be {kind.__name__}, got {value!r}")
        settings[key] = value
    settings["tile"] = settings["tile"] or None  # 0: the Upscaler's policy, as in the config
    if settings["merge"] not in MERGES:
        raise LBNetError(f"merge must be one of {', '.join(MERGES)}, got {settings['merge']!r}")
    return settings


class ImageModel:
    """TritonPythonModel of the image model (see the module docstring)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.configure(parameters(config), f"Triton model {config.get('name')}")

    def configure(self, params: dict[str, str], source: str) -> None:
        """Settings from the config's parameters, checked as the Upscaler checks them (also
        when the repository is written, so a bad setting never reaches a server)."""
        self.runner = BlsTileRunner(params, source)
        tile = int(params.get("tile", "0"))
        self.defaults: dict[str, Any] = {
            "tile": tile or None,  # 0: the Upscaler's policy (whole image where it fits)
            "overlap": int(params["overlap"]),
            "merge": params["merge"],
            "batch": int(params.get("batch", "1")),
        }
        self.budget_mb = int(params["memory_budget_mb"])
        Upscaler(self.runner, memory_budget_mb=self.budget_mb, **self.defaults)  # checked now

    def upscale(self, image: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise LBNetError(f"expected an HxWx3 image of at least 1x1, got shape {image.shape}")
        upscaler = Upscaler(self.runner, memory_budget_mb=self.budget_mb, **settings)
        if image.shape[0] * image.shape[1] > upscaler.max_input_pixels():
            h, w = image.shape[:2]
            raise LBNetError(f"a {w}x{h} image is larger than the {upscaler.limit_text()}")
        return upscaler.upscale(image)

    def execute(self, requests: list[Any]) -> list[Any]:
        def outputs(pb: Any, request: Any) -> list[Any]:
            image = pb.get_input_tensor_by_name(request, IMAGE_INPUT).as_numpy()
            settings = request_settings(request.parameters(), self.defaults)
            return [pb.Tensor(IMAGE_OUTPUT, self.upscale(image, settings))]

        return answer(requests, outputs)
