"""The client of a Triton image repository (`--backend triton --url HOST:PORT`), over gRPC.

`TritonRunner` is a `Runner` whose tiles run on the server's tile model (what parity and
bench's forward pass time), and an `ImageServer`: the Upscaler hands it whole images, which the
server's image model tiles and merges (what upscale and eval send). The model's facts come from
the image model's config parameters, so nothing local is needed but tritonclient[grpc].
Every failure (server unreachable, a model not ready, an error response, a server that dies
mid-request) is one LBNetError line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError

from .backend import describe_facts
from .triton_backend import IMAGE_INPUT, IMAGE_OUTPUT, TileModelRunner, parameters

DEFAULT_URL = "127.0.0.1:8001"  # Triton's gRPC port
TIMEOUT_S = 3600.0  # one request: a large image tiled on a busy CPU server takes minutes


def served_name(variant: str, scale: int, precision: str = "fp32") -> str:
    """The name `lbnet-deploy triton` gives a model by default (and `--backend triton` asks
    the server for when --model is a model name): e.g. lbnet_t_x4_fp32."""
    return f"{variant.lower().replace('-', '_')}_x{scale}_{precision}"


def _message(exc: Exception) -> str:
    text = exc.message() if hasattr(exc, "message") else str(exc)
    lines = str(text or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class TritonRunner(TileModelRunner):
    """A model of a Triton image repository on a server (see the module docstring)."""

    def __init__(self, url: str, model: str, timeout_s: float = TIMEOUT_S) -> None:
        import tritonclient.grpc as grpcclient

        self.url, self.model, self.timeout_s = url, model, timeout_s
        self._grpc = grpcclient
        try:
            self.client = grpcclient.InferenceServerClient(url)
            config = self.client.get_model_config(model, as_json=True, client_timeout=30)
        except Exception as exc:  # tritonclient raises its own type, or grpc's for a bad URL
            raise LBNetError(f"Triton at {url}, model {model}: {_message(exc)}") from None
        params = parameters(config.get("config", config))
        if params.get("role") != "image":
            raise LBNetError(
                f"Triton model {model} at {url} is not an lbnet-deploy image model "
                "(write one with `lbnet-deploy triton --images`)"
            )
        self.read_tile_model(params, f"Triton model {model} at {url}")
        self.tile_model = params["tile_model"]
        self.tile_type = params.get("tile_type", "TYPE_FP32").removeprefix("TYPE_")
        self.tile_names = params.get("tile_input", "lr"), params.get("tile_output", "sr")

    def describe(self) -> dict[str, object]:
        return describe_facts(self.facts, "triton", url=self.url, model=self.model)

    def _infer(self, model: str, name: str, array: np.ndarray, output: str, **kw: Any) -> Any:
        tensor = self._grpc.InferInput(name, list(array.shape), _datatype(array))
        tensor.set_data_from_numpy(array)
        try:
            result = self.client.infer(
                model, [tensor], outputs=[self._grpc.InferRequestedOutput(output)],
                client_timeout=self.timeout_s, **kw,
            )  # fmt: skip
        except Exception as exc:
            raise LBNetError(f"Triton at {self.url}, model {model}: {_message(exc)}") from None
        return result.as_numpy(output)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Tiles on the server's tile model (`infer`: in slices of the batch it takes)."""
        if self.tile_type == "FP16":
            batch = batch.astype(np.float16)
        name_in, name_out = self.tile_names
        out = self._infer(self.tile_model, name_in, batch, name_out)
        return np.asarray(out, dtype=np.float32)

    def upscale_image(self, image: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
        """uint8 H x W x 3 -> uint8 sH x sW x 3 on the image model, tiled there with `settings`
        (tile, overlap, merge, batch; None values leave the server's). The image model takes
        and returns uint8 only: any other input (a 16-bit file's uint16) is one line."""
        if image.dtype != np.uint8:  # a cast would wrap 16-bit samples modulo 256
            what = "16-bit samples" if image.dtype == np.uint16 else f"{image.dtype} samples"
            raise LBNetError(
                f"Triton model {self.model} serves 8-bit images and this one has {what}: "
                "upscale it with a local backend (which keeps 16 bits) or convert it to 8 bits"
            )
        given = {k: v for k, v in settings.items() if v is not None}
        image = np.ascontiguousarray(image)
        out = self._infer(self.model, IMAGE_INPUT, image, IMAGE_OUTPUT, parameters=given)
        expected = (self.scale * image.shape[0], self.scale * image.shape[1], 3)
        if out is None or out.shape != expected or out.dtype != np.uint8:
            shape = None if out is None else out.shape
            raise LBNetError(f"Triton model {self.model} returned {shape}, not {expected}")
        return out

    def statistics(self, model: str | None = None) -> dict[str, Any]:
        """Triton's inference statistics of a model (default: the tile model), as JSON."""
        stats = self.client.get_inference_statistics(model or self.tile_model, as_json=True)
        return dict(stats)


def _datatype(array: np.ndarray) -> str:
    return {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32",
            np.dtype(np.float16): "FP16"}[array.dtype]  # fmt: skip
