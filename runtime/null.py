"""A stand-in device for capacity planning (`bench --backend null --device-ms T`): the host side
of the TensorRT runner with a device that takes `device_ms` per batch and computes nothing.

What the host does per batch is the TensorRT runner's (`engine.py`): an output buffer out of
`streams` + 1 and a context out of `streams`, the batch copied into the context's input buffer
and queued on the device (`submit`), the context free again once it is waited for, the output
leased where it lies (`Pending.wait`: the Upscaler merges from the buffer) or copied out of it
(`infer`). The device runs one batch at a time, as one GPU runs one engine, in the order
they were queued: each ends `device_ms` after the one before it (or after it was queued, if
later), as a GPU's queue runs, not when a host thread wakes; the host sleeps until then, so it
keeps its CPUs. So `Upscaler` over it measures how fast the host
side (tiling, batching, merging, rounding) can feed a device that takes T per batch, and how
much of it overlaps that device time. Its output is a fixed photo-like pattern of the right
shape (not an upscaled image): never written for a user, so not in the backend registry.
"""

from __future__ import annotations

import functools
import queue
import threading
import time

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts

from .backend import GraphRunner, Leased, Once, Pending, describe_facts, lend, submit_file
from .engine import DEFAULT_STREAMS

MAX_DEVICE_MS = 1e6  # a batch of over 16 minutes stands in for no device worth planning for


class NullRunner(GraphRunner):
    """Fixed `facts.input_size` x `facts.batch` batches in, the right shape out after
    `device_ms` on a stand-in device; `streams` as the TensorRT runner's."""

    def __init__(
        self, facts: ModelFacts, device_ms: float = 0.0, streams: int = DEFAULT_STREAMS
    ) -> None:
        if facts.input_size is None or facts.batch is None:
            raise LBNetError("the null backend stands in for a fixed-size engine: give its size")
        if not 0 <= device_ms <= MAX_DEVICE_MS:  # also NaN; time.sleep overflows past ~1e9 s
            raise LBNetError(f"device time must be 0..{MAX_DEVICE_MS:.0f} ms, got {device_ms}")
        if streams < 1:
            raise LBNetError(f"streams must be at least 1, got {streams}")
        self.facts, self.device_ms = facts, device_ms
        b, (h, w), s = facts.batch, facts.input_size, facts.scale
        rng = np.random.default_rng(0)  # photo-like: smooth, with noise (PNG encodes it slowly)
        yy, xx = np.mgrid[0 : s * h, 0 : s * w].astype(np.float32)
        pattern = 128 + 60 * np.sin(xx / 9) * np.cos(yy / 13) + rng.normal(0, 6, yy.shape)
        output = np.broadcast_to(np.clip(pattern, 0, 255), (b, 3, s * h, s * w))
        self._queue = threading.Lock()
        self._idle_at = 0.0  # perf_counter time when the device has run every batch queued
        # as the runner's: `streams` contexts, each with its input buffer, and one output
        # buffer more (C order, as the runner's page-locked buffers: astype of the broadcast
        # pattern keeps its strides, channels innermost, which made the merge read 3x slower)
        self._contexts: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        self._outputs: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        for _ in range(streams):
            self._contexts.put(np.empty((b, 3, h, w), np.float32))
        for _ in range(streams + 1):
            self._outputs.put(np.ascontiguousarray(output, dtype=np.float32))
        self._streams = streams
        self._host_bytes = 4 * b * 3 * h * w * (streams + (streams + 1) * s * s)

    @property
    def streams(self) -> int:
        return self._streams

    @property
    def leases(self) -> int:
        return self._streams + 1

    @property
    def host_bytes(self) -> int:
        return self._host_bytes

    def describe(self) -> dict[str, object]:
        return describe_facts(self.facts, "null", device_ms=self.device_ms, streams=self.streams)

    def submit(self, batch: np.ndarray) -> Pending:
        assert self.max_batch is not None  # a fixed size and batch: checked when made
        return submit_file(self._submit, batch, self.facts, self.input_size, self.max_batch)

    @property
    def lends_buffers(self) -> bool:
        # its output is the pattern, made once: scaled in place to 0..255 (a unit-range
        # graph's facts) it would be scaled again by every later batch, so such leases copy
        return self.facts.peak == 255.0

    def _submit(self, batch: np.ndarray) -> Pending:
        out = self._outputs.get()
        try:
            context = self._contexts.get()  # waits while every context has a batch queued
        except BaseException:
            self._outputs.put(out)
            raise
        done = [0.0]  # when the device is done with the batch (none queued: now)
        device = Once(functools.partial(self._finish, context, done))
        leased = lend(out, device, functools.partial(self._outputs.put, out))
        try:
            context[...] = batch
            done[0] = self._queue_on_device()
            # The output stays as made: a device's copy would rewrite it per batch, out of the
            # CPU's caches maybe, so a merge from it is at best as fast here as beside one.
            return Pending(leased, device, None if self.lends_buffers else Leased.copied)
        except BaseException:
            leased.release()
            raise

    def _queue_on_device(self) -> float:
        """When the device will have run this batch (perf_counter seconds): as a GPU's queue,
        it starts when the batches before it are done, or now if they are."""
        if not self.device_ms:
            return 0.0
        with self._queue:
            self._idle_at = max(time.perf_counter(), self._idle_at) + self.device_ms / 1000
            return self._idle_at

    def _finish(self, context: np.ndarray, done: list[float]) -> None:
        """Back when the device is done with the batch, its context free again."""
        try:
            delay = done[0] - time.perf_counter()
            if delay > 0:  # sleep(0) still gives the CPU away on a busy machine
                time.sleep(delay)
        finally:
            self._contexts.put(context)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._submit(batch).wait().take()  # a copy, as the runner's: the buffer is reused
