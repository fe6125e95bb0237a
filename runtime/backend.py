"""The one interface every inference backend offers, Polygraphy-style: a loader makes the
session or engine, a runner wraps it behind `infer`. Tiling, parity checks and benchmarks talk
only to a `Runner`, never to onnxruntime, torch or TensorRT directly.

Backends: `onnxrt.OnnxRuntimeRunner` (CPU/CUDA/TensorRT execution providers) and
`torch_ref.TorchRunner` (the PyTorch reference) and `engine.TensorRTRunner` (fixed-shape
TensorRT engines: copy to the device, `execute_async_v3`, copy back).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts, model_facts


@runtime_checkable
class Runner(Protocol):
    """Runs LBNet on a float32 NCHW batch of 0..255 RGB; returns the (unclipped) SR batch on
    0..255, whatever range the file takes (`ModelFacts.io`: runners over a file scale in and
    out with `infer_file`)."""

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) every input must have, or None for any size."""
        ...

    @property
    def max_batch(self) -> int | None:
        """The largest batch `infer` takes in one call, or None for any."""
        ...

    @property
    def scale(self) -> int: ...

    @property
    def model_facts(self) -> ModelFacts:
        """What the runner computes (variant, scale, sizes, precision) and its memory model."""
        ...

    def describe(self) -> dict[str, object]:
        """Facts for logs and reports (`describe_facts` plus what the backend adds)."""
        ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> (B, 3, sH, sW) float32."""
        ...


@runtime_checkable
class DeviceMemory(Protocol):
    """What a runner on a device adds: the device memory it took (bench reports it)."""

    def device_peak_mb(self) -> float | None:
        """Peak device memory since the last reset, in MiB (None: not on a device)."""
        ...

    def reset_device_peak(self) -> None: ...


@runtime_checkable
class Overlapped(Protocol):
    """What a runner on a device adds when the host's work can overlap the device's: it runs
    `streams` batches at once and `infer` may be called from several threads (the rest wait),
    so the Upscaler prepares and merges on the host while the device runs (TensorRT). Its
    working memory was allocated on the device when it loaded, so the Upscaler sends it whole
    batches; on the host it holds page-locked buffers (`host_bytes`), and each batch in flight
    its input and output there, which the Upscaler counts against the memory budget."""

    @property
    def streams(self) -> int: ...

    @property
    def host_bytes(self) -> int:
        """Page-locked host memory it holds (each context's input buffer, its output buffers)."""
        ...


class Leased:
    """A batch's output where a runner on a device left it (`Pending.wait`): its page-locked
    output buffer, read without a copy, which takes no other batch until `release()`; or an
    array the caller owns (`owned`), whose release does nothing. Release happens once, however
    often and from whichever threads it is called, and at the latest when the lease is
    collected or the interpreter exits (a lease dropped by an interrupt would otherwise keep
    its buffer for good: the next batch, `close()` and exit would wait for it forever)."""

    def __init__(self, out: np.ndarray, release: Callable[[], None] | None = None) -> None:
        self.out, self.owned = out, release is None
        # finalize: called once (atomically), also at exit, and holds no reference to self
        self._release = weakref.finalize(self, release) if release is not None else None

    def release(self) -> None:
        if self._release is not None:
            self._release()

    def take(self) -> np.ndarray:
        """The output as an array the caller owns (a float32 copy where it lies in a buffer),
        the lease released."""
        with self:
            return self.out if self.owned else np.array(self.out, dtype=np.float32)

    def copied(self) -> Leased:
        """The same output in an array the caller owns (`take`), the buffer free again."""
        return self if self.owned else Leased(self.take())

    def __enter__(self) -> Leased:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Once:
    """`func` run by the first call, from whichever thread; later calls wait for it to end."""

    def __init__(self, func: Callable[[], None]) -> None:
        self._func: Callable[[], None] | None = func
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            func, self._func = self._func, None
            if func is not None:
                func()


def lend(out: np.ndarray, device: Once, give_back: Callable[[], None]) -> Leased:
    """A lease of an output buffer the device writes into: given back only once the device
    is done with it (`device`, which the batch's `Pending` also runs), whichever is released
    or collected first (the cycle collector frees them in any order)."""

    def release() -> None:
        try:
            device()
        finally:
            give_back()

    return Leased(out, release)


class Pending:
    """A batch submitted to a runner on a device (`Leasing.submit`): an output buffer and an
    execution context taken, its work queued on the device behind the batches submitted
    before it (batches submitted from worker threads reached the device in whatever order the
    threads woke, and the merge waited for the oldest). `wait()`, once, waits for the device,
    gives the context back and the output leased (`lend`); a batch never waited for is waited
    for when collected. Its context is free again only then: a thread that submits more
    batches than the runner has contexts without waiting for them waits forever."""

    def __init__(
        self,
        leased: Leased,
        device: Once,
        after: Callable[[Leased], Leased] | None = None,
    ) -> None:
        self._leased: Leased | None = leased
        self._device = weakref.finalize(self, device)  # by wait(), else when collected
        self._after = [] if after is None else [after]

    def then(self, step: Callable[[Leased], Leased]) -> Pending:
        """This batch, `step` applied to its lease once the device has finished it."""
        self._after.append(step)
        return self

    def wait(self) -> Leased:
        leased, self._leased = self._leased, None  # the caller's from here: released by it
        if leased is None:
            raise RuntimeError("a submitted batch is waited for once")
        try:
            self._device()
            for step in self._after:
                leased = step(leased)
            return leased
        except BaseException:
            leased.release()
            raise


@runtime_checkable
class Leasing(Protocol):
    """What a runner on a device adds when its output can be read where it was downloaded
    (TensorRT's page-locked buffers): the Upscaler merges from there, sparing the copy `infer`
    makes (14 of 60 ms of host time per 512x512 x4 image at batch 8, measured with the null
    runner)."""

    @property
    def leases(self) -> int:
        """Outputs it lends at once: its page-locked output buffers, one more than the batches
        it runs at once, so the host merges one while the device runs the others."""
        ...

    @property
    def lends_buffers(self) -> bool:
        """Whether its leases hold output buffers (False: each is a copy, e.g. of FP16
        outputs)."""
        ...

    def submit(self, batch: np.ndarray) -> Pending:
        """`infer` of at most `max_batch` images, queued on the device behind the batches
        submitted before it; `wait()` gives its output leased where it lies."""
        ...


@runtime_checkable
class ImageServer(Protocol):
    """What a runner adds where whole images are upscaled where it runs (a Triton image model,
    `triton_client.TritonRunner`): the Upscaler hands it each image with its own settings
    (tile, overlap, merge, batch) instead of tiling here."""

    def upscale_image(self, image: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
        """uint8 H x W x 3 -> uint8 sH x sW x 3."""
        ...


def check_batch(batch: np.ndarray, input_size: tuple[int, int] | None) -> np.ndarray:
    """The batch as contiguous float32 NCHW RGB; a wrong shape is a programming error."""
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) batch, got shape {batch.shape}")
    if input_size is not None and tuple(batch.shape[2:]) != tuple(input_size):
        raise ValueError(f"this runner takes {input_size} inputs only, got {batch.shape[2:]}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def run_fixed_batch(
    run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, fixed: int | None
) -> np.ndarray:
    """`run` takes exactly `fixed` images (None: any number): run in slices, zero-pad the last."""
    if fixed is None or batch.shape[0] == fixed:
        return run(batch)
    outs = []
    for start in range(0, batch.shape[0], fixed):
        part = batch[start : start + fixed]
        short = fixed - part.shape[0]
        if short:
            part = np.concatenate([part, np.zeros((short, *part.shape[1:]), part.dtype)])
        outs.append(run(part)[: fixed - short])
    return np.concatenate(outs)


def to_range(batch: np.ndarray, peak: float) -> np.ndarray:
    """0..255 data -> a graph's range (`ModelFacts.peak`); the same array where that is 255."""
    return batch if peak == 255.0 else batch * np.float32(peak / 255.0)


def from_range(out: np.ndarray, peak: float) -> np.ndarray:
    """A graph's output in its range -> 0..255, scaled in place (the array is the caller's)."""
    if peak != 255.0:
        out *= np.float32(255.0 / peak)
    return out


def infer_file(
    run: Callable[[np.ndarray], np.ndarray],
    batch: np.ndarray,
    facts: ModelFacts,
    input_size: tuple[int, int] | None,
    fixed: int | None,
) -> np.ndarray:
    """`Runner.infer` of a runner over one of our files (graph or engine of `facts`; `run`: one
    batch the file takes, `fixed` images where fixed): checked, in slices of the fixed batch,
    and on 0..255 whatever the file's range: a unit graph gets batch / 255 and its output is
    scaled back in place."""
    batch = check_batch(batch, input_size)
    return from_range(run_fixed_batch(run, to_range(batch, facts.peak), fixed), facts.peak)


def submit_file(
    submit: Callable[[np.ndarray], Pending],
    batch: np.ndarray,
    facts: ModelFacts,
    input_size: tuple[int, int] | None,
    fixed: int,
) -> Pending:
    """`Leasing.submit` of a runner over one of our files (`submit`: one context's batch of
    exactly `fixed` images): as `infer_file`, a shorter batch zero-padded, its output the
    output buffer's first rows, scaled to 0..255 there."""
    batch = to_range(check_batch(batch, input_size), facts.peak)
    n = batch.shape[0]
    if n > fixed:
        raise ValueError(f"a submission takes at most {fixed} images, got {n}")
    if n < fixed:
        batch = np.concatenate([batch, np.zeros((fixed - n, *batch.shape[1:]), batch.dtype)])

    def rows(leased: Leased) -> Leased:
        leased.out = from_range(leased.out[:n], facts.peak)
        return leased

    return submit(batch).then(rows)


def graph_facts(raw: dict[str, str], dims: list[int | None], source: str) -> ModelFacts:
    """A graph's checked ModelFacts from its lbnet metadata (`raw`, prefix dropped) and its
    input dims (None where dynamic), for any runtime that reads our ONNX files: the sizes are
    the metadata's, an older export's graph dims where the metadata has none, and a file whose
    graph and metadata disagree is one line."""
    facts = model_facts(raw, source)
    if len(dims) != 4:
        raise LBNetError(f"{source}: its input has {len(dims)} dims, not (B, 3, H, W)")
    graph = (dims[0], dims[2], dims[3])
    size, batch = facts.input_size, facts.batch
    if "input_size" not in raw:  # an older export: the graph's own dims decide
        size = (graph[1], graph[2]) if graph[1] and graph[2] else None
    if batch is None:
        batch = graph[0]
    fixed = (graph[0] or batch, *(size or (None, None)))
    if any(g and g != f for g, f in zip(graph, fixed, strict=True)):
        shown = ["?" if d is None else d for d in dims]
        raise LBNetError(
            f"{source}: its graph takes {shown}, its metadata says batch "
            f"{facts.batch or 'any'}, size {size or 'any'}: the file contradicts itself"
        )
    return facts.with_sizes(size, batch)


def describe_facts(facts: ModelFacts, backend: str, **extra: object) -> dict[str, object]:
    """The facts every runner reports, from its ModelFacts (one shape for every backend)."""
    return {
        "backend": backend,
        "variant": facts.variant,
        "scale": facts.scale,
        "heads": facts.model.heads,
        "n_feats": facts.model.n_feats,
        "precision": facts.precision,
        "input_size": facts.input_size,
        "max_batch": facts.batch,
        **extra,
    }


class GraphRunner:
    """Shared part of the runners over one of our ONNX files (ONNX Runtime, OpenVINO), of a
    model served by Triton and of the null runner: sizes and scale from the checked `facts`,
    `infer` in slices of its fixed batch (`_run`: one batch the model takes)."""

    facts: ModelFacts

    @property
    def model_facts(self) -> ModelFacts:
        return self.facts

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.facts.input_size

    @property
    def max_batch(self) -> int | None:
        return self.facts.batch

    @property
    def scale(self) -> int:
        return self.facts.scale

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return infer_file(self._run, batch, self.facts, self.input_size, self.max_batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class AnySizeRunner:
    """Shared part of runners that take any height, width and batch (PyTorch, bicubic)."""

    scale: int

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None

    @property
    def max_batch(self) -> int | None:
        return None
