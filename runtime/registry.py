"""The backend registry: every runtime the toolkit can run a model on, in one table.

An entry says what the backend needs installed, whether it needs a GPU, which precisions it
runs, what kind of file it runs (an ONNX graph, a TensorRT engine, a checkpoint), how to open
its runner on such a file, and how to tell that the runner really runs where it says. The CLI's
`--backend` choices, parity's backends and bench's product contenders all come from here;
`lbnet_deploy.loaders` turns a model name, checkpoint or file into the file an entry needs.

Adding a backend is one entry here and one runner module beside this one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import COMPUTE, PRECISIONS, Form

from .backend import Runner

Artifact = Literal["onnx", "engine", "checkpoint", "server"]  # server: no local file
# (file, CPU threads, compute precision) -> runner; tensorrt's also takes cuda_graph=False
Opener = Callable[..., Runner]


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    requires: tuple[str, ...]  # importable modules it needs
    gpu: bool
    precisions: tuple[str, ...]  # what it runs (a graph's own precision, or --precision)
    artifact: Artifact  # the file its runner opens
    open: Opener  # (file, CPU threads, compute precision) -> runner
    where: Callable[[Runner], str]  # where the opened runner really runs, for the summary
    # the attention form (metadata.Form) of the graph exported for it, per compute precision;
    # unlisted: TensorRT's "batched". Measured in benchmarks/studies/cpu_backends.py (README,
    # "CPU backends"): OpenVINO fuses the flat form's attention into one kernel, ONNX Runtime
    # runs the batched one fastest.
    forms: tuple[tuple[str, Form], ...] = ()
    # a "server" backend's runner connects to a model on a server: (url, model name) -> runner
    connect: Callable[[str, str], Runner] | None = None
    # one line where this machine's device cannot compute a compute precision (bf16): asked
    # before any export, which is made in a form of its own for it
    check_compute: Callable[[str], None] | None = None

    def form(self, compute: str = "fp32") -> Form:
        """The form of the graph a name or checkpoint is exported to for this backend."""
        return dict(self.forms).get(compute, "batched")

    def missing(self) -> list[str]:
        """The required modules that are not installed (empty: it can be tried)."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def check_installed(self) -> None:
        missing = self.missing()
        if missing:
            raise LBNetError(
                f"backend {self.name} needs {', '.join(missing)}, which is not installed"
            )


def _fp32_only(name: str, compute: str) -> None:
    if compute != "fp32":
        raise LBNetError(f"the {name} backend does not compute in {compute}")


def _ort(providers: tuple[str, ...]) -> Opener:
    def open_ort(path: Path, threads: int | None, compute: str = "fp32") -> Runner:
        from .onnxrt import OnnxRuntimeRunner

        _fp32_only("ONNX Runtime", compute)
        return OnnxRuntimeRunner(path, providers=providers, threads=threads)

    return open_ort


def _ort_where(runner: Runner) -> str:
    # create_session refused the session if a provider asked for did not load
    providers = runner.describe().get("providers") or []
    return str(providers[0]) if isinstance(providers, list) and providers else "?"


def _tensorrt(
    path: Path, threads: int | None, compute: str = "fp32", *, cuda_graph: bool = True
) -> Runner:
    from .engine import TensorRTRunner

    _fp32_only("tensorrt", compute)
    return TensorRTRunner(path, cuda_graph=cuda_graph)


def _torch(path: Path, threads: int | None, compute: str = "fp32") -> Runner:
    from .torch_ref import TorchRunner

    _fp32_only("torch", compute)
    return TorchRunner(path, threads=threads)


def _openvino(name: str) -> Opener:
    def open_openvino(path: Path, threads: int | None, compute: str = "fp32") -> Runner:
        from .openvino import DEVICES, OpenVINORunner

        return OpenVINORunner(path, DEVICES[name], threads, compute)

    return open_openvino


def _openvino_check(name: str) -> Callable[[str], None]:
    def check(compute: str) -> None:
        from .openvino import DEVICES, check_device, core

        check_device(core(), DEVICES[name], compute)

    return check


def _openvino_where(runner: Runner) -> str:
    facts = runner.describe()
    return f"OpenVINO {facts.get('device', '?')} ({facts.get('precision', '?')})"


def _triton(url: str, model: str) -> Runner:
    from .triton_client import TritonRunner

    return TritonRunner(url, model)


def _no_file(path: Path, threads: int | None, compute: str = "fp32") -> Runner:
    raise LBNetError(f"the triton backend runs a model on a server (--url), not {path}")


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "ort", "ONNX Runtime, CPU (default)", ("onnxruntime",), False,
            PRECISIONS, "onnx", _ort(("cpu",)), _ort_where,
        ),
        Backend(
            "ort-cuda", "ONNX Runtime's CUDA provider", ("onnxruntime",), True,
            PRECISIONS, "onnx", _ort(("cuda",)), _ort_where,
        ),
        Backend(
            "ort-tensorrt", "ONNX Runtime's TensorRT provider", ("onnxruntime",), True,
            PRECISIONS, "onnx", _ort(("tensorrt", "cuda")), _ort_where,
        ),
        Backend(
            # TensorRT and CUDA are probed by trt_common (stubs are not TensorRT; install hint)
            "tensorrt", "native TensorRT engines (fixed size)", (), True,
            PRECISIONS, "engine", _tensorrt,
            lambda r: str(r.describe().get("gpu", "GPU")),
        ),
        Backend(
            "openvino", "OpenVINO, CPU (bf16 where the CPU has it)", ("openvino",), False,
            PRECISIONS + COMPUTE, "onnx", _openvino("openvino"), _openvino_where,
            forms=(("fp32", "flat"), ("bf16", "flat16"), ("bf16-attn", "flat")),
            check_compute=_openvino_check("openvino"),
        ),
        Backend(
            "openvino-gpu", "OpenVINO's Intel GPU plugin", ("openvino",), True,
            PRECISIONS, "onnx", _openvino("openvino-gpu"), _openvino_where,
        ),
        Backend(
            "openvino-npu", "OpenVINO's Intel NPU plugin", ("openvino",), False,
            PRECISIONS, "onnx", _openvino("openvino-npu"), _openvino_where,
        ),
        Backend(
            "torch", "the PyTorch reference (the official code's semantics)", ("torch",), False,
            ("fp32",), "checkpoint", _torch, lambda r: str(r.describe().get("device", "cpu")),
        ),
        Backend(
            "triton", "a Triton server's image model (--url; tiled on the server)",
            ("tritonclient", "grpc"), False, PRECISIONS, "server", _no_file,
            lambda r: f"Triton {r.describe().get('url')} {r.describe().get('model')}",
            connect=_triton,
        ),
    )
}  # fmt: skip

DEFAULT = "ort"
# not an entry: `upscale`'s default, the fastest installed CPU backend measured on this machine
# (lbnet_deploy.benchmarks.choose; engine files: tensorrt)
AUTO = "auto"


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise LBNetError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}") from None


def help_text() -> str:
    """The backends for --help: name, what it is, GPU or not."""
    return "; ".join(f"{n}: {b.summary}{' (GPU)' if b.gpu else ''}" for n, b in BACKENDS.items())


def names(artifact: Artifact | None = None) -> tuple[str, ...]:
    """Registered backend names, optionally only those that run `artifact` files."""
    return tuple(n for n, b in BACKENDS.items() if artifact is None or b.artifact == artifact)
