"""ONNX Runtime backend: a session loader and a runner over an lbnet-deploy ONNX file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import from_metadata

from .backend import check_batch, run_fixed_batch

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def default_threads() -> int:
    """CPUs this process may run on (cgroup/taskset-aware, unlike os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def resolve_providers(names: Sequence[str], available: Sequence[str]) -> list[str]:
    """User names ("cpu", "cuda", "tensorrt") -> ORT provider names, CPU always last as fallback.

    A provider is used only when asked for AND present in this onnxruntime build.
    """
    chosen: list[str] = []
    for name in names:
        provider = PROVIDERS.get(name.lower())
        if provider is None:
            raise LBNetError(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
        if provider not in available:
            have = ", ".join(k for k, v in PROVIDERS.items() if v in available) or "none"
            raise LBNetError(f"provider {name!r} is not available in onnxruntime (have: {have})")
        if provider not in chosen:
            chosen.append(provider)
    if PROVIDERS["cpu"] not in chosen:
        chosen.append(PROVIDERS["cpu"])
    return chosen


@dataclass(frozen=True)
class SessionLoader:
    """Callable that opens the session (Polygraphy's SessionFromOnnx): lazy and re-usable."""

    path: Path
    providers: tuple[str, ...] = ("cpu",)
    threads: int | None = None

    def __call__(self) -> Any:
        import onnxruntime as ort

        if not self.path.is_file():
            raise LBNetError(f"model file not found: {self.path}")
        providers = resolve_providers(self.providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or default_threads()
        options.inter_op_num_threads = 1  # the graph is one chain: parallelism is inside ops
        options.log_severity_level = 3  # provider fallback chatter is not for our users
        try:
            return ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # InvalidProtobuf, Fail, ...: all mean "not a usable model"
            first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            raise LBNetError(
                f"{self.path} is not a readable ONNX model ({type(exc).__name__}: {first})"
            ) from None


def _dim(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxRuntimeRunner:
    """Runner over an lbnet-deploy ONNX file; facts come from its `lbnet.*` metadata."""

    def __init__(
        self,
        model: str | Path | SessionLoader,
        providers: Sequence[str] = ("cpu",),
        threads: int | None = None,
    ) -> None:
        loader = (
            model
            if isinstance(model, SessionLoader)
            else SessionLoader(Path(model), tuple(providers), threads)
        )
        self.path = loader.path
        self.session = loader()
        facts = from_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        if "scale" not in facts:
            raise LBNetError(f"{self.path} was not exported by lbnet-deploy (no lbnet.* metadata)")
        self.facts = facts
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self._output_name = self.session.get_outputs()[0].name
        self._scale = int(facts["scale"])
        self._input_size = _parse_size(facts.get("input_size"), inp.shape)
        batch = facts.get("batch")
        self._batch = int(batch) if batch and batch.isdigit() else _dim(inp.shape[0])

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._input_size

    @property
    def max_batch(self) -> int | None:
        return self._batch

    @property
    def scale(self) -> int:
        return self._scale

    def describe(self) -> dict[str, object]:
        return {
            "backend": "onnxruntime",
            "path": str(self.path),
            "providers": self.session.get_providers(),
            "variant": self.facts.get("variant", "?"),
            "scale": self._scale,
            "heads": int(self.facts.get("heads", 8)),  # 8 (LBNet) over-estimates memory: safe
            "n_feats": int(self.facts.get("n_feats", 32)),
            "precision": self.facts.get("precision", "fp32"),
            "input_size": self._input_size,
            "max_batch": self._batch,
        }

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch, self._input_size)
        return run_fixed_batch(self._run, batch, self._batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output_name], {self._input_name: batch})[0]


def _parse_size(label: str | None, shape: Sequence[object]) -> tuple[int, int] | None:
    """'128x96' or 'dynamic' from metadata; else the graph's input shape."""
    if label and label != "dynamic":
        h, w = (int(v) for v in label.split("x"))
        return h, w
    if label == "dynamic":
        return None
    dh, dw = _dim(shape[2]), _dim(shape[3])
    return (dh, dw) if dh and dw else None
