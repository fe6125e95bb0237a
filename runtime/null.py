"""A stand-in device for capacity planning (`bench --backend null --device-ms T`): the host side
of the TensorRT runner with a device that takes `device_ms` per batch and computes nothing.

What the host does per batch is the TensorRT runner's (`engine.py`): a slot out of `streams`,
the batch copied into the slot's input buffer, the output leased where it lies (`lease`: the
Upscaler merges from the slot's buffer) or copied out of it (`infer`); the device is one lock
held `device_ms` (one batch at a time, as one GPU runs one engine), sleeping so the host keeps
its CPUs. So `Upscaler` over it measures how fast the host
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

from .backend import GraphRunner, Leased, describe_facts, lease_file
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
        self._device = threading.Lock()
        self._free: queue.SimpleQueue[tuple[np.ndarray, np.ndarray]] = queue.SimpleQueue()
        for _ in range(streams):  # each slot's input and output buffer, as the runner's
            # C order, as the runner's page-locked buffer: astype of the broadcast pattern
            # keeps its strides (channels innermost), which made the merge read 3x slower
            slot_out = np.ascontiguousarray(output, dtype=np.float32)
            self._free.put((np.empty((b, 3, h, w), np.float32), slot_out))
        self._streams = streams
        self._host_bytes = streams * 4 * b * 3 * h * w * (1 + s * s)

    @property
    def streams(self) -> int:
        return self._streams

    @property
    def host_bytes(self) -> int:
        return self._host_bytes

    def describe(self) -> dict[str, object]:
        return describe_facts(self.facts, "null", device_ms=self.device_ms, streams=self.streams)

    def lease(self, batch: np.ndarray) -> Leased:
        assert self.max_batch is not None  # a fixed size and batch: checked when made
        return lease_file(self._lease, batch, self.facts, self.input_size, self.max_batch)

    @property
    def lends_slots(self) -> bool:
        # its output is the pattern, made once: scaled in place to 0..255 (a unit-range
        # graph's facts) it would be scaled again by every later batch, so such leases copy
        return self.facts.peak == 255.0

    def _lease(self, batch: np.ndarray) -> Leased:
        slot = self._free.get()
        leased = Leased(slot[1], functools.partial(self._free.put, slot))
        try:
            slot[0][...] = batch
            with self._device:
                if self.device_ms:  # sleep(0) still gives the CPU away on a busy machine
                    time.sleep(self.device_ms / 1000)
        except BaseException:
            leased.release()
            raise
        # The output stays as made: a device's copy would rewrite it per batch, out of the
        # CPU's caches maybe, so a merge from it is at best as fast here as beside one.
        return leased if self.lends_slots else Leased(leased.take())

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._lease(batch).take()  # a copy, as the runner's: the buffer is reused
