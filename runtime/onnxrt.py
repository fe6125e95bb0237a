"""ONNX Runtime backend: a session loader and a runner over an lbnet-deploy ONNX file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError, first_line
from lbnet_deploy.metadata import from_metadata

from .backend import GraphRunner, describe_facts, graph_facts

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


def bounded_threads(threads: int | None) -> int:
    """`threads` (None: every CPU available), at most the CPUs this process may run on: more
    threads than CPUs only contend (100000 threads made a 0.3 s job run for minutes)."""
    if threads is not None and threads < 1:
        raise LBNetError(f"threads must be at least 1, got {threads}")
    return min(threads or default_threads(), default_threads())


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


# Whether ONNX Runtime's threads spin between operators waiting for work (its default): right
# for a process that has the cores to itself. Where processes share them (Triton's tile model
# beside the image models' processes, the server and its clients), the spinning takes the CPU
# the others need: measured through Triton, 4 clients, Set5 x4, 2 cores, 3 rounds each: 0.72x
# in-process throughput spinning, 0.86x not.
_spin = True


def share_cores() -> None:
    """Sessions opened from now on in this process do not spin (`_spin`)."""
    global _spin
    _spin = False


def options(threads: int | None = None, *, log_level: int = 3, **settings: Any) -> Any:
    """The one place ONNX Runtime session options are made (`settings`: more attributes to set,
    e.g. enable_profiling=True). Sessions keep ORT's CPU memory arena; `ArenaGuard` keeps it
    from growing across input shapes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = bounded_threads(threads)
    opts.inter_op_num_threads = 1  # the graph is one chain: parallelism is inside ops
    opts.log_severity_level = log_level  # provider fallback chatter is not for our users
    for key, value in settings.items():
        setattr(opts, key, value)
    if not _spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def create_session(
    model: str | Path | bytes,
    *,
    providers: Sequence[str] = ("cpu",),
    threads: int | None = None,
    **settings: Any,
) -> Any:
    """An `onnxruntime.InferenceSession` over a file or serialized graph, opened the one way
    every part of the tool opens them (see `options`); a file that is not a usable model is one
    LBNetError line, and a GPU provider that did not load is one too (onnxruntime itself only
    prints a line and runs on the CPU)."""
    import onnxruntime as ort

    label = "graph" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        if not Path(model).is_file():
            raise LBNetError(f"model file not found: {model}")
        model = str(model)
    wanted = resolve_providers(providers, ort.get_available_providers())
    opts = options(threads, **settings)
    try:
        session = ort.InferenceSession(model, opts, providers=wanted)
    except Exception as exc:  # InvalidProtobuf, Fail, ...: all mean "not a usable model"
        first = first_line(exc)
        raise LBNetError(
            f"{label} is not a readable ONNX model ({type(exc).__name__}: {first})"
        ) from None
    check_providers(wanted, session.get_providers())
    return session


def check_providers(wanted: Sequence[str], got: Sequence[str]) -> None:
    """Fail where onnxruntime silently fell back to the CPU: a provider that is compiled in but
    whose libraries (CUDA, cuDNN, TensorRT) did not load is dropped from the session."""
    missing = [p for p in wanted if p not in got]
    if missing:
        names = ", ".join(k for k, v in PROVIDERS.items() if v in missing)
        raise LBNetError(
            f"onnxruntime could not load its {names} provider (its CUDA/cuDNN/TensorRT libraries "
            "are missing or do not match; onnxruntime would have run on the CPU instead)"
        )


class ArenaGuard:
    """Run options that keep ORT's CPU arena from accumulating across input shapes.

    The arena keeps every block it ever allocated, and each new input shape allocates more: a
    dynamic-shape session grew from image to image until the kernel killed it (eval over
    differently sized photos: 23 GB RSS by the eighth). Turning the arena off bounds memory but
    cost 10-30% per run here (LBNet-T x4, 64x64 and 128x128, interleaved). So a run whose input
    shape differs from the previous run's shrinks the arena when it ends (ORT's
    `memory.enable_memory_arena_shrinkage`): peak memory is the largest single input's, memory
    returns between images, and runs of one shape (tiles) keep the arena's speed. The shrink
    frees only regions with nothing in use, so the output must not live in the arena: see
    `run_guarded`. Measured (LBNet-T x4, whole images 96x96..176x160 then 100x100, AVX-512
    EPYC): RSS after the last 5163 MB with the arena alone, 138 MB with this (peak 2746 MB;
    arena off: 90 MB, peak 2636 MB)."""

    def __init__(self) -> None:
        self._last: tuple[int, ...] | None = None
        self._options: dict[bool, Any] = {}

    def run_options(self, shape: tuple[int, ...]) -> Any:
        shrink = shape != self._last
        self._last = shape
        if shrink not in self._options:
            import onnxruntime as ort

            opts = ort.RunOptions()
            # a failed run comes back as an exception; ORT's own log of it is a second copy
            opts.log_severity_level = 4
            if shrink:
                opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self._options[shrink] = opts
        return self._options[shrink]


def run_guarded(session: Any, guard: ArenaGuard, batch: np.ndarray, scale: int) -> np.ndarray:
    """One run of a one-input, one-output x`scale` session whose memory goes back between shapes.

    The output is written into an array of ours (ORT's I/O binding), not allocated by ORT: an
    output ORT allocates is still held when the run ends and pins its arena region, so the
    shrink kept that region and the next shape allocated beside it. Measured (a 64-channel
    1x1-conv graph, six shapes 500..1000 squared, AVX-512 EPYC): RSS after the last run 365 MB
    and peak 609 MB with ORT's outputs, 154 MB and 421 MB with ours (arena off: 129 and 423;
    arena alone: 457 and 468). A bound run that fails (a graph whose output is not x`scale`:
    ORT refuses our array, in words that differ between versions) is run once more unbound, so
    the caller sees the shape the graph really gives, or the run's own error."""
    n, c, h, w = batch.shape
    out = np.empty((n, c, h * scale, w * scale), np.float32)
    inp, name = session.get_inputs()[0].name, session.get_outputs()[0].name
    binding = session.io_binding()
    binding.bind_cpu_input(inp, batch)
    binding.bind_output(name, "cpu", 0, np.float32, out.shape, out.ctypes.data)
    options = guard.run_options(batch.shape)
    try:
        session.run_with_iobinding(binding, options)
    except Exception:
        return session.run([name], {inp: batch}, options)[0]
    return out


@dataclass(frozen=True)
class SessionLoader:
    """Callable that opens the session (Polygraphy's SessionFromOnnx): lazy and re-usable."""

    path: Path
    providers: tuple[str, ...] = ("cpu",)
    threads: int | None = None

    def __call__(self) -> Any:
        return create_session(self.path, providers=self.providers, threads=self.threads)


def _dim(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxRuntimeRunner(GraphRunner):
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
        self._arena = ArenaGuard()
        raw = from_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        inp = self.session.get_inputs()[0]
        self.facts = graph_facts(raw, [_dim(d) for d in inp.shape], str(self.path))

    def describe(self) -> dict[str, object]:
        return describe_facts(
            self.facts, "onnxruntime", path=str(self.path), providers=self.session.get_providers()
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return run_guarded(self.session, self._arena, batch, self.scale)
