"""Image in, image out: plan tiles within a memory budget, run them in batches through any
`Runner`, merge, round to uint8. Torch-free; the backend is whatever runner it is given."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts

from .backend import ImageServer, Leased, Leasing, Overlapped, Pending, Runner
from .tiling import MERGES, Merger, Tile, TileGrid, pad_to

# Chosen by benchmarks/studies/tiling_study.py (LBNet-T x4, dynamic ONNX, ORT CPU, 2 cores), mean
# PSNR-Y vs HR, delta to full image (Set5 32.075 / Set14 28.442 dB, bridge scored as gray):
#   96/16 feather  Set5 -0.003  Set14 +0.039   (96/16 crop -0.004 / +0.035; 96/8 feather
#   -0.003 / +0.036; 96/24 feather -0.003 / +0.040 for 1.5x the overlap cost)
#   64/16 feather  -0.017 / +0.028, 48/16 feather -0.029 / +0.017 (too close to / past 0.02)
# Feather was never worse than crop. Tiles of 96 cost ~2.2 s each on 2 cores; the attention
# grows with N^2/16, so large images are faster tiled than whole.
DEFAULT_TILE = 96
DEFAULT_OVERLAP = 16
DEFAULT_MERGE = "feather"
# 2 GiB: leaves room on a 24 GiB desktop and on an 8 GiB Jetson (shared CPU/GPU memory).
DEFAULT_BUDGET_MB = 2048
MIN_TILE = 16  # below this, padding and overlap dominate the work
ROUND_ROWS = 32  # output rows rounded at once (3 x 32 x 2048 floats: 786 kB, in the cache)

Progress = Callable[[int, int], None]  # (tiles done, tiles total)
Item = TypeVar("Item")
Result = TypeVar("Result")


def pipelined(
    work: Callable[[Item], Result],
    items: Iterable[Item],
    consume: Callable[[Item, Result], None],
    depth: int = 1,
    discard: Callable[[Result], None] | None = None,
) -> None:
    """`consume(item, work(item))` for each item in order, `work` running on threads up to
    `depth` items ahead of `consume` (depth 1: here, one item at a time); `items` is read here,
    in order, one item ahead of its work. Where `work` or `consume` fails, the error is raised
    here, after the work of every item read has finished (an item may hold what must be given
    back: a batch queued on a device); `discard` gets each result that is then never consumed
    (as it finishes: a lease it holds may be what other work waits for)."""
    item: Item | None = None
    if depth <= 1:
        try:
            for item in items:
                consume(item, work(item))
        finally:  # a traceback kept (an interactive session) keeps the frame, not the item
            item = None
        return
    queued: deque[tuple[Item, Future[Result]]] = deque()
    pool = ThreadPoolExecutor(depth, thread_name_prefix="lbnet-pipeline")

    def consume_oldest() -> None:
        done, future = queued[0]
        result = future.result()  # still queued while waiting: an interrupt here discards it
        queued.popleft()
        consume(done, result)

    try:
        for item in items:
            queued.append((item, pool.submit(work, item)))
            if len(queued) == depth:  # the next one is queued before this one is consumed
                consume_oldest()
        while queued:
            consume_oldest()
    finally:
        item = None  # one read but not yet queued (an interrupt between the two): collected
        try:
            left = {future for _, future in queued}
            while left:
                finished, left = wait(left, return_when=FIRST_COMPLETED)
                for future in finished:
                    if discard is not None and future.exception() is None:
                        discard(future.result())
        finally:  # the threads end even where a discard fails
            pool.shutdown(wait=True)


def _merges_from_buffers(runner: Runner) -> bool:
    """Whether tiles are merged straight from the runner's output buffers (`backend.Leasing`):
    where its leases hold them and it has two or more (with one, the device would idle while
    each batch is merged: its output is copied out instead and the buffer freed at once)."""
    return isinstance(runner, Leasing) and runner.lends_buffers and runner.leases >= 2


_LEASE_LOCKS: weakref.WeakKeyDictionary[Runner, threading.Lock] = weakref.WeakKeyDictionary()
_LEASE_LOCKS_LOCK = threading.Lock()


def _lease_lock(runner: Runner) -> threading.Lock:
    """The runner's lock for one image's leases at a time."""
    with _LEASE_LOCKS_LOCK:
        return _LEASE_LOCKS.setdefault(runner, threading.Lock())


def largest_square_tile(budget_bytes: int, facts: ModelFacts, batch: int = 1) -> int:
    """The largest t such that a batch of t x t tiles fits the budget (at least 8), by the
    model's own memory model (`ModelFacts.inference_bytes`)."""
    lo, hi = 8, 16384
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if facts.inference_bytes(mid * mid, batch) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(frozen=True)
class Footprint:
    """Host memory one image needs besides the model, in bytes per LR pixel (the decoded image,
    and its decoding) and per output pixel (the float32 merge canvas, 12, with the result
    converted beside it; then, with the canvas gone, the result written back: grayscale, alpha,
    encoding). Measured peaks per input depth and output format: README, Memory."""

    lr: int = 18
    sr: int = 18

    def bytes(self, height: int, width: int, scale: int) -> int:
        return height * width * (self.lr + self.sr * scale * scale)


# 8 bits in and out (PNG, JPEG, TIFF; the API): measured peaks 14 per LR and 15 per output pixel
PLAIN = Footprint()


def image_bytes(height: int, width: int, scale: int, footprint: Footprint = PLAIN) -> int:
    """Host memory one image needs besides the model (`Footprint`)."""
    return footprint.bytes(height, width, scale)


def available_memory_mb() -> int:
    """MemAvailable from /proc/meminfo (Linux); 4 GiB where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Plan:
    """How one image is run: padded size, tile size, overlap, batch, batches in flight."""

    grid: TileGrid
    batch: int
    in_flight: int = 1  # batches prepared and run ahead of the merge

    @property
    def whole(self) -> bool:
        return len(self.grid.tiles()) == 1


def check_shape(out: np.ndarray, expected: tuple[int, ...]) -> None:
    """A model's output is what a x`scale` LBNet gives: a graph that lies about its scale is
    one line, not a wrong image, as soon as its first batch is back."""
    if tuple(out.shape) != expected:
        raise LBNetError(
            f"the model returned shape {tuple(out.shape)} for a batch that should give "
            f"{expected}: its output is not scale x its input"
        )


def check_finite(values: np.ndarray) -> None:
    """Values hold numbers: a checkpoint with NaN weights is one line, not a wrong image.

    The Upscaler checks an image's first batch (broken weights fail there) and then every
    value of the image itself, where it is rounded, band by band while the band is in the
    cache (`upscale`), or once merged (`upscale_float`): a value a tile's merge weight drops
    changes nothing, and NaN or infinity anywhere else reaches the image (products and sums
    keep it). Checked per batch instead, the sums cost a pass over every tile: 5 of ~32 ms
    per 512x512 x4 image at batch 8 on 2 cores, on the path from the device to the merge.

    By the sum (one pass, no mask: `isfinite(x).all()` took 7-10 of the 68 ms of such an
    image): a sum of finite values this small cannot overflow, so it is finite exactly when
    they all are; where it is not, the exact check decides (huge but finite values pass)."""
    with np.errstate(over="ignore"):
        total = values.sum()
    if not np.isfinite(total) and not np.isfinite(values).all():
        raise LBNetError("the model returned NaN or infinite values (broken weights or graph)")


class Upscaler:
    """uint8 H x W x 3 RGB -> uint8 sH x sW x 3, for any H, W >= 1 (16-bit samples, uint16,
    are fed as v / 257 and may come back as uint16: `upscale(out_bits=16)`).

    tile None: a dynamic runner takes the whole image when it fits `memory_budget_mb`, else
    DEFAULT_TILE (shrunk to fit the budget); a fixed-size runner always uses its input size,
    padding smaller images. An explicit tile is also shrunk to fit the budget.

    The budget covers the model's working memory and the image's own buffers (`image_bytes`:
    the float merge canvas is 12 bytes per output pixel); an image whose buffers leave no room
    for the smallest tile is refused with one line. For a runner on a device (`Overlapped`),
    whose working memory is there, it covers the runner's page-locked host buffers and each
    batch in flight on the host (its float input and output) instead: fewer batches are held in
    flight where they do not fit, and an image that leaves no room for one is refused.
    `memory_budget_mb` None: 75% of the memory available, read again for every image (other
    processes come and go during a long run).

    `in_flight`: batches prepared and run ahead of the merge (None: one more than the runner
    runs at once where it overlaps host and device work, `backend.Overlapped`, else 1; at most
    what the budget holds and, where each batch holds an output buffer until merged
    (`_merges_from_buffers`), the runner's output buffers: `plan`). Tiles are still merged in
    order, so the output is the same bit for bit.
    """

    def __init__(
        self,
        runner: Runner,
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        memory_budget_mb: int | None = DEFAULT_BUDGET_MB,
        batch: int = 1,
        merge: str = DEFAULT_MERGE,
        in_flight: int | None = None,
    ) -> None:
        if tile is not None and tile < 1:
            raise LBNetError(f"tile must be at least 1, got {tile}")
        if overlap < 0:
            raise LBNetError(f"overlap must be >= 0, got {overlap}")
        if batch < 1:
            raise LBNetError(f"batch must be at least 1, got {batch}")
        if merge not in MERGES:
            raise LBNetError(f"merge must be one of {', '.join(MERGES)}, got {merge!r}")
        if memory_budget_mb is not None and memory_budget_mb < 1:
            raise LBNetError(f"memory budget must be at least 1 MB, got {memory_budget_mb}")
        if in_flight is not None and in_flight < 1:
            raise LBNetError(f"in_flight must be at least 1, got {in_flight}")
        if in_flight is None:
            in_flight = runner.streams + 1 if isinstance(runner, Overlapped) else 1
        self.in_flight = in_flight
        self.runner, self.tile, self.overlap, self.merge = runner, tile, overlap, merge
        self.memory_budget_mb = memory_budget_mb
        self.facts = runner.model_facts
        self.batch = min(batch, runner.max_batch or batch)
        budget_mb = self.budget // 2**20
        limit = largest_square_tile(self.budget, self.facts)
        if runner.input_size is None and limit < MIN_TILE:
            raise LBNetError(
                f"memory budget {budget_mb} MB is too small for even a {MIN_TILE}-pixel tile"
            )
        if tile is not None and runner.input_size is None and tile > limit:
            need = self.facts.inference_bytes(tile * tile) / 2**20
            raise LBNetError(
                f"tile {tile} needs ~{need:.0f} MB, over the memory budget of "
                f"{budget_mb} MB (largest tile that fits: {limit})"
            )

    @property
    def budget(self) -> int:
        """The memory budget in bytes now (re-read each time when it follows available memory)."""
        if self.memory_budget_mb is None:
            return available_memory_mb() * 3 // 4 * 2**20
        return self.memory_budget_mb * 2**20

    def _model_floor(self) -> int:
        """The least memory an image must leave the model: one smallest tile (dynamic runners);
        a runner on a device, its page-locked buffers and one batch in flight on the host."""
        runner = self.runner
        if isinstance(runner, Overlapped) and runner.input_size is not None:
            return runner.host_bytes + self._batch_bytes(*runner.input_size)
        if runner.input_size is not None:
            return 0  # a fixed-size graph's working memory: fixed when it loaded
        return self.facts.inference_bytes(MIN_TILE * MIN_TILE)

    def _batch_bytes(self, tile_h: int, tile_w: int) -> int:
        """Host memory of one batch in flight to a runner on a device: its float32 input and
        output at the runner's batch (a shorter one is padded to it, and its output comes out
        of the runner's buffer whole)."""
        batch = self.runner.max_batch or self.batch
        return 4 * 3 * batch * tile_h * tile_w * (1 + self.runner.scale**2)

    def max_input_pixels(self) -> int:
        """The largest LR image (in pixels) the budget holds: checked from a file's header before
        it is decoded, so a decompression bomb is refused without allocating anything. By the
        smallest footprint (`PLAIN`): a 16-bit file within it is decoded within the budget too
        (README, Memory), and `plan` refuses an image whose own footprint does not fit."""
        per_pixel = image_bytes(1, 1, self.runner.scale)
        return max((self.budget - self._model_floor()) // per_pixel, 1)

    def limit_text(self) -> str:
        """Where `max_input_pixels` comes from, for messages."""
        budget, scale = self.budget // 2**20, self.runner.scale
        return f"input that the memory budget ({budget} MB, --memory-budget) holds at x{scale}"

    def plan(self, height: int, width: int, footprint: Footprint = PLAIN) -> Plan:
        """Tile size and batch for an image (padded size for fixed-size runners) whose own
        buffers take `footprint`."""
        fixed = self.runner.input_size
        budget = self.budget
        own = image_bytes(height, width, self.runner.scale, footprint)
        model_budget = budget - own
        if model_budget < self._model_floor():
            what = "the model"
            if isinstance(self.runner, Overlapped) and fixed is not None:
                pinned, batch = self.runner.host_bytes / 2**20, self._batch_bytes(*fixed) / 2**20
                what = (f"the runner's page-locked buffers ({pinned:.0f} MB) and a batch in "
                        f"flight ({batch:.0f} MB)")  # fmt: skip
            raise LBNetError(
                f"a {width}x{height} image needs {own / 2**20:.0f} MB for its own "
                f"buffers at x{self.runner.scale}, leaving no room for {what} in the "
                f"{budget // 2**20} MB memory budget (--memory-budget)"
            )
        if fixed is not None:
            th, tw = fixed
            grid_h, grid_w = max(height, th), max(width, tw)
        else:
            grid_h, grid_w = height, width
            fits = self.facts.inference_bytes(height * width) <= model_budget
            if self.tile is None and fits:
                th, tw = height, width
            else:
                limit = largest_square_tile(model_budget, self.facts)
                t = min(self.tile or DEFAULT_TILE, limit)
                th, tw = min(t, height), min(t, width)
        overlap = min(self.overlap, max(min(th, tw) // 2 - 1, 0))  # keep a positive stride
        grid = TileGrid(grid_h, grid_w, th, tw, overlap)
        batch = min(self.batch, len(grid.tiles()))
        in_flight = self.in_flight
        if isinstance(self.runner, Overlapped):  # whole batches: its working memory is on the
            # device; on the host its buffers and as many batches in flight as fit (>= 1: floor)
            room = model_budget - self.runner.host_bytes
            in_flight = max(1, min(in_flight, room // self._batch_bytes(th, tw)))
            if isinstance(self.runner, Leasing) and _merges_from_buffers(self.runner):
                # each batch in flight holds an output buffer until merged, and they are
                # merged in order: one more than the buffers would wait for one its elders hold
                in_flight = max(1, min(in_flight, self.runner.leases))
        else:
            per_tile = max(self.facts.inference_bytes(th * tw), 1)
            batch = max(1, min(batch, model_budget // per_tile))
        return Plan(grid, batch, in_flight)

    def upscale_float(
        self, image: np.ndarray, progress: Progress | None = None, footprint: Footprint = PLAIN
    ) -> np.ndarray:
        """The merged, unrounded 3 x sH x sW float32 output on 0..255, planned beside the
        image's own buffers (`footprint`)."""
        result = self._merged(image, progress, footprint)
        check_finite(result)
        return result

    def _merged(
        self,
        image: np.ndarray,
        progress: Progress | None,
        footprint: Footprint,
        finished: Callable[[np.ndarray, int], None] | None = None,
    ) -> np.ndarray:
        """`upscale_float`, telling `finished(output, rows)` after each batch merged
        that the output's rows [0, rows) are final (`Merger.final_rows`)."""
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise LBNetError(f"expected an HxWx3 image of at least 1x1, got shape {image.shape}")
        if isinstance(self.runner, ImageServer):  # tiled where the model runs, as here
            settings = {"tile": self.tile or 0, "overlap": self.overlap, "merge": self.merge,
                        "batch": self.batch}  # fmt: skip
            sr = self.runner.upscale_image(image, settings)
            if progress is not None:
                progress(1, 1)
            return sr.transpose(2, 0, 1).astype(np.float32)
        height, width = image.shape[:2]
        plan = self.plan(height, width, footprint)
        grid = plan.grid
        lr = pad_to(image, grid.height, grid.width)  # a copy only where a fixed size pads
        s = self.runner.scale
        merger = Merger(grid, s, self.merge)
        tiles = grid.tiles()
        done = 0

        runner = self.runner
        leasing = _merges_from_buffers(runner)
        Started = tuple[list[Tile], Pending | np.ndarray]

        def start(group: list[Tile]) -> Started:  # here, in merge order
            # float32 per batch, not for the whole image (12 bytes per LR pixel)
            batch = np.stack([lr[t.y : t.y + grid.tile_h, t.x : t.x + grid.tile_w] for t in group])
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
            if lr.dtype == np.uint16:
                batch /= np.float32(257)
            # a device's queue takes the batches in the order they are merged: submitted from
            # the workers, a later batch could take the device (and a buffer) first, and the
            # merge waited for the oldest
            return group, runner.submit(batch) if isinstance(runner, Leasing) else batch

        def run(started: Started) -> Leased:  # on a worker thread where pipelined
            group, job = started
            if not isinstance(job, Pending):
                leased = Leased(runner.infer(job))
            elif leasing:
                leased = job.wait()
            else:  # copied out: the buffer is free again before the batch is merged
                leased = job.wait().copied()
            try:
                check_shape(leased.out, (len(group), 3, s * grid.tile_h, s * grid.tile_w))
                if group[0] == tiles[0]:  # the rest is checked in the image (`check_finite`)
                    check_finite(leased.out)
            except BaseException:
                leased.release()
                raise
            return leased

        result = merger.result()[:, : s * height, : s * width]

        def merge(started: Started, leased: Leased) -> None:  # here, in tile order
            nonlocal done
            group = started[0]
            with leased:  # the buffer is the runner's again once its tiles are merged
                for tile, sr in zip(group, leased.out, strict=True):
                    merger.add(tile, sr)
                    done += 1
                    if progress is not None:
                        progress(done, len(tiles))
            if finished is not None:
                finished(result, min(merger.final_rows, result.shape[1]))

        groups = [tiles[i : i + plan.batch] for i in range(0, len(tiles), plan.batch)]
        # one image at a time per leasing runner: two images' batches, each holding buffers
        # until merged in its own order, could each wait for a buffer the other holds
        with _lease_lock(runner) if leasing else contextlib.nullcontext():
            pipelined(run, map(start, groups), merge, plan.in_flight, Leased.release)
        return result

    def upscale(
        self,
        image: np.ndarray,
        progress: Progress | None = None,
        out_bits: int = 8,
        footprint: Footprint = PLAIN,
    ) -> np.ndarray:
        """uint8 (or float on 0..255, or uint16) H x W x 3 -> sH x sW x 3, C-ordered: uint8, or
        uint16 for `out_bits` 16 (the unrounded output x 257: 16-bit inputs keep their depth)."""
        dtype = np.uint16 if out_bits == 16 else np.uint8
        out: np.ndarray | None = None
        rounded = 0  # output rows handed to the rounding thread so far
        pending: deque[Future[None]] = deque()
        # rows are rounded on a thread of their own as soon as the merge has finished them, not
        # all after it: the image's last batch is followed by one band's rounding instead of
        # the whole image's (14 ms at 2048x2048), which overlapped nothing
        with ThreadPoolExecutor(1, thread_name_prefix="lbnet-round") as rounder:

            def finished(sr: np.ndarray, rows: int) -> None:
                nonlocal out, rounded
                if out is None:
                    out = np.empty((sr.shape[1], sr.shape[2], 3), dtype)
                if rows > rounded:
                    pending.append(rounder.submit(_round_rows, sr, out, rounded, rows, out_bits))
                    rounded = rows
                while pending and pending[0].done():
                    pending.popleft().result()  # rows that failed their check stop the image

            sr = self._merged(image, progress, footprint, finished)
            finished(sr, sr.shape[1])
            for future in pending:
                future.result()
        assert out is not None  # made by the last `finished`
        return out


def _round_rows(sr: np.ndarray, out: np.ndarray, start: int, stop: int, out_bits: int) -> None:
    """Rows [start, stop) of the 3 x sH x sW float output checked (`check_finite`) and rounded
    into the sH x sW x 3 `out`, a band of rows at a time while the band is in the cache: in
    place (at 2048x2048 x4 every float copy of the output costs 800 MB), each channel written
    into the interleaved result (2048x2048: 23 ms for rounding and one transposing astype over
    the whole image, 14 ms this way; numpy's strided cast is the slow part)."""
    for y in range(start, stop, ROUND_ROWS):
        band = sr[:, y : min(y + ROUND_ROWS, stop)]
        check_finite(band)
        if out_bits == 16:
            band *= 257
        np.rint(band, out=band)
        np.clip(band, 0, 2**out_bits - 1, out=band)
        for c in range(3):
            out[y : y + band.shape[1], :, c] = band[c]


__all__ = [
    "DEFAULT_BUDGET_MB",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "PLAIN",
    "Footprint",
    "Tile",
    "Upscaler",
]
