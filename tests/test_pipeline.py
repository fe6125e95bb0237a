"""The host pipeline: batches in flight ahead of the merge, PNGs written behind the next image,
the null backend bench stands in for a device with, all with the same output bit for bit."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnet_deploy.descriptor import describe
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts
from lbnet_deploy.runtime import files
from lbnet_deploy.runtime.backend import AnySizeRunner, Leased, Pending, describe_facts
from lbnet_deploy.runtime.files import upscale_files
from lbnet_deploy.runtime.null import NullRunner
from lbnet_deploy.runtime.upscaler import Upscaler, pipelined

from .conftest import texture

FACTS = ModelFacts(describe("LBNet-T", 4))


def null(tile: int = 16, batch: int = 2, device_ms: float = 0.0) -> NullRunner:
    return NullRunner(FACTS.with_sizes((tile, tile), batch), device_ms)


def test_pipelined_consumes_in_order_with_work_ahead_and_raises_what_failed() -> None:
    started: list[int] = []
    consumed: list[tuple[int, int]] = []

    def work(i: int) -> int:
        started.append(i)
        time.sleep(0.01 * (5 - i))  # later items finish first
        return i * i

    def consume(i: int, result: int) -> None:
        if i == 0:
            time.sleep(0.05)  # meanwhile the work runs ahead
            assert len(started) >= 3
        consumed.append((i, result))

    pipelined(work, range(5), consume, depth=3)
    assert consumed == [(i, i * i) for i in range(5)]

    def fail_at_two(i: int) -> int:
        if i == 2:
            raise LBNetError("broken batch")
        return i

    seen: list[int] = []
    with pytest.raises(LBNetError, match="broken batch"):
        pipelined(fail_at_two, range(6), lambda i, r: seen.append(r), depth=2)
    assert seen == [0, 1]


def lent(runner: NullRunner) -> int:
    """Output buffers the null runner has lent (each of its contexts must be free then)."""
    assert runner._contexts.qsize() == runner.streams
    return runner.leases - runner._outputs.qsize()


def test_null_runner_gives_the_shape_after_the_device_time_one_batch_at_a_time() -> None:
    runner = null(device_ms=40)
    assert (runner.input_size, runner.max_batch, runner.scale, runner.streams) == (
        (16, 16),
        2,
        4,
        2,
    )
    x = np.zeros((2, 3, 16, 16), np.float32)
    start = time.perf_counter()
    threads = [threading.Thread(target=runner.infer, args=(x,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - start >= 0.08  # two batches on one device: one after another
    out = runner.infer(np.zeros((3, 3, 16, 16), np.float32))  # 3 through a batch-2 stand-in
    assert out.shape == (3, 3, 64, 64) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255 and out.std() > 10  # photo-like, not flat
    assert runner.describe()["backend"] == "null"
    for bad in (-1.0, float("nan"), float("inf"), 1e300):  # 1e300: sleep's OverflowError
        with pytest.raises(LBNetError, match=r"device time must be 0\.\.1000000 ms"):
            null(device_ms=bad)
    with pytest.raises(LBNetError, match="streams must be at least 1, got 0"):
        NullRunner(FACTS.with_sizes((16, 16), 2), streams=0)
    with pytest.raises(LBNetError, match="stands in for a fixed-size engine"):
        NullRunner(FACTS)


def test_the_stand_in_device_runs_queued_batches_back_to_back() -> None:
    """As a GPU's queue: a batch submitted behind another starts when that one ends, not when
    a host thread comes back for it, so a late waiter finds both done."""
    runner = null(device_ms=40)
    x = np.zeros((2, 3, 16, 16), np.float32)
    start = time.perf_counter()
    first, second = runner.submit(x), runner.submit(x)
    time.sleep(0.1)  # the host busy elsewhere past both batches' 2 x 40 ms
    waited = time.perf_counter()
    first.wait().release()
    second.wait().release()
    assert time.perf_counter() - waited < 0.015  # both were done meanwhile
    third = runner.submit(x)  # the device idle: 40 ms from now
    third.wait().release()
    assert time.perf_counter() - start >= 0.14


def test_batches_reach_the_device_in_the_order_they_are_merged() -> None:
    """The Upscaler submits every batch from its own thread, in merge order, whatever order
    its workers run in (from the workers, a later batch could take the device and a slot
    first, and the merge waited for the oldest)."""
    order: list[tuple[float, str]] = []

    class Recording(NullRunner):
        def _submit(self, batch: np.ndarray) -> Pending:
            order.append((float(batch[0, 0, 0, 0]), threading.current_thread().name))
            return super()._submit(batch)

    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :, 0] = np.arange(64)[:, None] + np.arange(64)[None, :] // 16 * 64 % 251
    runner = Recording(FACTS.with_sizes((16, 16), 1), device_ms=2, streams=3)
    upscaler = Upscaler(runner, overlap=4, batch=1)
    assert upscaler.plan(64, 64).in_flight == runner.leases == 4
    upscaler.upscale(image)
    tiles = upscaler.plan(64, 64).grid.tiles()
    assert [v for v, _ in order] == [float(image[t.y, t.x, 0]) for t in tiles]
    assert {name for _, name in order} == {threading.current_thread().name}


class Nearest(AnySizeRunner):
    """x2 nearest neighbour that takes `ms` per call and records when it ran."""

    def __init__(self, ms: float = 0.0) -> None:
        self.scale, self.ms = 2, ms
        self.runs: list[tuple[float, float]] = []

    @property
    def model_facts(self) -> ModelFacts:
        return ModelFacts(describe("LBNet-T", 2))

    def describe(self) -> dict[str, object]:
        return describe_facts(self.model_facts, "nearest")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        time.sleep(self.ms / 1000)
        out = batch.repeat(2, axis=2).repeat(2, axis=3)
        self.runs.append((start, time.perf_counter()))
        return out


@pytest.mark.parametrize("merge", ["feather", "crop"])
def test_batches_in_flight_give_the_serial_image_bit_for_bit(merge: str) -> None:
    image = texture(70, 53)
    serial = Upscaler(null(), tile=16, overlap=4, batch=2, merge=merge, in_flight=1)
    overlapped = Upscaler(null(device_ms=5), tile=16, overlap=4, batch=2, merge=merge)
    # one more than the null runner's two contexts: its three output buffers, each batch
    # holding one until merged
    assert overlapped.plan(70, 53).in_flight == 3
    expected = serial.upscale(image)
    np.testing.assert_array_equal(overlapped.upscale(image), expected)
    # more asked for: still three (a fourth would wait for a buffer its elders hold until merged)
    wide = Upscaler(null(device_ms=5), tile=16, overlap=4, batch=2, merge=merge, in_flight=5)
    assert wide.plan(70, 53).in_flight == 3
    np.testing.assert_array_equal(wide.upscale(image), expected)
    with pytest.raises(LBNetError, match="in_flight must be at least 1"):
        Upscaler(null(), in_flight=0)


def _photos(folder: Path, count: int, size: tuple[int, int] = (24, 20)) -> list[Path]:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(texture(*size, seed=i)).save(folder / f"p{i}.png")
    return sorted(folder.iterdir())


def _slow_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Make each PNG write take 50 ms more; the (start, end) of each, as they happen."""
    writes: list[tuple[float, float]] = []
    write = files._write

    def slow_write(*args: object) -> None:
        start = time.perf_counter()
        time.sleep(0.05)
        write(*args)  # type: ignore[arg-type]
        writes.append((start, time.perf_counter()))

    monkeypatch.setattr(files, "_write", slow_write)
    return writes


def test_pngs_are_written_behind_the_next_image_with_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each PNG is encoded and written while the next image runs (measured: a write inside a
    run of the next image); the files and the summary are those of writing in turn."""
    inputs = _photos(tmp_path / "in", 4)
    writes = _slow_writes(monkeypatch)
    results = {}
    for behind in (False, True):
        runner = Nearest(ms=50)
        writes.clear()
        out = tmp_path / f"out-{behind}"
        summary = upscale_files(Upscaler(runner), inputs, out, progress=False, write_behind=behind)
        assert summary.images == 4 and summary.failed == 0
        overlapped = any(w0 < r1 and r0 < w1 for w0, w1 in writes for r0, r1 in runner.runs)
        assert overlapped == behind
        results[behind] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert results[True] == results[False] and len(results[True]) == 4


def test_a_failed_write_behind_is_one_line_and_the_others_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = _photos(tmp_path / "in", 3)
    write = files._write

    def disk_full_on_p1(out: Path, *args: object) -> None:
        if out.name == "p1.png":
            raise LBNetError(f"cannot write {out} (No space left on device)")
        write(out, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "_write", disk_full_on_p1)
    summary = upscale_files(Upscaler(Nearest()), inputs, tmp_path / "out", progress=False)
    assert (summary.images, summary.failed) == (2, 1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p2.png"]
    assert "p1.png (No space left on device)" in caplog.text


def test_a_large_image_is_written_before_the_next_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past WRITE_BEHIND_SHARE of the budget, the finished image is not held beside the next;
    what a write holds is its format's footprint per output pixel (18 for an 8-bit PNG), not
    twice the 8-bit result (6 per pixel: this share let it overlap)."""
    inputs = _photos(tmp_path / "in", 3)
    writes = _slow_writes(monkeypatch)
    monkeypatch.setattr(files, "WRITE_BEHIND_SHARE", 10 * 48 * 40 / (2048 * 2**20))
    runner = Nearest(ms=50)
    summary = upscale_files(Upscaler(runner), inputs, tmp_path / "out", progress=False)
    assert summary.images == 3 and len(writes) == 3
    assert not any(w0 < r1 and r0 < w1 for w0, w1 in writes for r0, r1 in runner.runs)


def test_a_runner_on_a_device_gets_whole_batches_whatever_the_host_budget() -> None:
    """A batch-8 engine's working memory is on the device, allocated when it loaded: the
    CPU memory model (which would hold 5 tiles of 96x96 LBNet-T in this budget) does not shrink
    its batches, which run_fixed_batch would pad back to 8 on the device."""
    from lbnet_deploy.runtime.upscaler import image_bytes

    assert Upscaler(null(96, 8), batch=8).plan(512, 512).batch == 8
    on_cpu = Nearest()  # the same model facts, run on the host
    five = 5 * on_cpu.model_facts.inference_bytes(96 * 96) + image_bytes(512, 512, 2)
    upscaler = Upscaler(on_cpu, tile=96, batch=8, memory_budget_mb=five // 2**20 + 1)
    assert upscaler.plan(512, 512).batch == 5


def test_a_device_runners_host_buffers_and_batches_in_flight_are_in_the_budget() -> None:
    """Its page-locked buffers (two contexts' inputs, three outputs) and each batch in flight
    (float input and output) are host memory: as many batches are held in flight as the budget
    holds beside the image, and an image that leaves no room for the buffers and one batch is
    refused in one line (they were outside the budget: 256 MB held a 930x930 image at tile 256
    x4 batch 8 and the run rose 475 MB)."""
    from lbnet_deploy.runtime.upscaler import image_bytes

    runner = null(128, 8)
    pinned = 4 * 8 * 3 * 128 * 128 * (2 + 3 * 16)  # two contexts' inputs, three outputs
    per_batch = 4 * 8 * 3 * 128 * 128 * (1 + 16)
    assert runner.host_bytes == pinned
    own = image_bytes(600, 600, 4)

    def planned(batches: float) -> Upscaler:
        mb = -(-(own + pinned + int(batches * per_batch)) // 2**20)
        return Upscaler(runner, batch=8, memory_budget_mb=mb)

    # at most its three output buffers: each batch in flight holds one until merged (`Leasing`)
    assert [planned(n).plan(600, 600).in_flight for n in (1, 2, 2.5, 3, 9)] == [1, 2, 2, 3, 3]
    assert planned(1).plan(600, 600).batch == 8  # whole batches still
    # the header check counts them too (the budget was rounded up to a whole MB)
    assert 0 <= planned(1).max_input_pixels() - 600 * 600 < 2**20 // image_bytes(1, 1, 4)
    assert planned(0.9).max_input_pixels() < 600 * 600
    with pytest.raises(LBNetError, match="page-locked buffers \\(75 MB\\) and a batch in flight"):
        planned(0.9).plan(600, 600)


def test_merge_and_rounding_are_the_straightforward_ones_to_the_bit() -> None:
    """The faster merge (only where a tile's feather weight is not 0) and the rounding in row
    bands give exactly what the plain formulas give: canvas += sr * outer(weights) for every
    tile in order, then rint, clip and uint8 over the whole image. The merge writes each
    pixel's first term instead of adding it to a zero: a -0 first term stays -0 (+0 in the
    plain sum), so signed zeros are compared as zeros; every other bit is the same."""
    from lbnet_deploy.runtime.tiling import Merger, TileGrid
    from lbnet_deploy.runtime.upscaler import to_uint8

    rng = np.random.default_rng(5)
    grid = TileGrid(70, 53, 16, 16, 5)
    merger, plain = Merger(grid, 4, "feather"), np.zeros((3, 280, 212), np.float32)
    for tile in grid.tiles():
        sr = rng.normal(100, 120, (3, 64, 64)).astype(np.float32)
        sr[:, ::7, ::5] = -0.0  # signed zeros too
        w = np.outer(merger._row_w[tile.y], merger._col_w[tile.x])
        plain[:, 4 * tile.y : 4 * tile.y + 64, 4 * tile.x : 4 * tile.x + 64] += sr * w
        merger.add(tile, sr)
    assert (merger.result() + np.float32(0)).tobytes() == (plain + np.float32(0)).tobytes()
    assert np.signbit(merger.result()).sum() > np.signbit(plain).sum()  # -0 first terms kept

    class Noisy(NullRunner):  # outputs that differ per batch, beyond 0..255
        def _submit(self, batch: np.ndarray) -> Pending:
            seed = int(batch.sum()) % 997

            def noisy(leased: Leased) -> Leased:
                out = leased.take()
                noise = np.random.default_rng(seed).normal(0, 90, out.shape)
                return Leased(out + noise.astype("f4"))

            return super()._submit(batch).then(noisy)

    upscaler = Upscaler(Noisy(FACTS.with_sizes((16, 16), 2)), overlap=4, batch=2, in_flight=1)
    image = texture(70, 53)
    expected = to_uint8(upscaler.upscale_float(image)).transpose(1, 2, 0)
    np.testing.assert_array_equal(upscaler.upscale(image), expected)


@pytest.mark.parametrize("merge", ["feather", "crop"])
def test_the_merge_writes_every_pixel_of_a_canvas_it_is_given(merge: str) -> None:
    """A canvas's old values are never read (a reused one needs no zeroing): merged into a
    NaN-filled canvas, grids with shifted last tiles and wide overlaps give the new canvas's
    result."""
    from lbnet_deploy.runtime.tiling import Merger, TileGrid

    rng = np.random.default_rng(11)
    for h, w, t, overlap, s in [(70, 53, 16, 5, 4), (100, 96, 96, 16, 2), (37, 180, 24, 11, 3),
                                (9, 9, 8, 3, 1), (200, 31, 40, 0, 2)]:  # fmt: skip
        grid = TileGrid(h, w, min(t, h), min(t, w), overlap)
        shape = (3, s * grid.height, s * grid.width)
        fresh, reused = (
            Merger(grid, s, merge),
            Merger(grid, s, merge, np.full(shape, np.nan, np.float32)),
        )
        for tile in grid.tiles():
            sr = rng.normal(100, 50, (3, s * grid.tile_h, s * grid.tile_w)).astype(np.float32)
            fresh.add(tile, sr)
            reused.add(tile, sr)
        assert reused.result().tobytes() == fresh.result().tobytes(), (h, w, t, overlap)
    with pytest.raises(ValueError, match="canvas must be float32"):
        Merger(grid, s, merge, np.zeros((3, 1, 1), np.float32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("in_flight", [1, 3])
def test_one_value_that_is_not_a_number_is_one_line(bad: float, in_flight: int) -> None:
    """One NaN or infinity among many tiles fails the image, batches in flight or not; huge
    finite values pass, also where their sum overflows (the exact check then decides)."""

    class OneBad(NullRunner):
        def __init__(self, *values: float) -> None:
            super().__init__(FACTS.with_sizes((16, 16), 2))
            self.values, self.calls = values, itertools.count(1)

        def _submit(self, batch: np.ndarray) -> Pending:
            pending = super()._submit(batch)
            if next(self.calls) != 3:  # one batch
                return pending

            def spoiled(leased: Leased) -> Leased:
                # in the slot, as a device would leave them; the stand-in's pattern put back
                # on release (a real tile: short batches pad after it)
                spot = (0, 2, slice(30, 30 + len(self.values)), 32)
                kept, out = leased.out[spot].copy(), leased.out
                out[spot] = self.values

                def release() -> None:
                    out[spot] = kept
                    leased.release()

                return Leased(out, release)

            return pending.then(spoiled)

    image = texture(70, 53)
    runner = OneBad(bad)
    with pytest.raises(LBNetError, match="NaN or infinite"):
        Upscaler(runner, overlap=4, batch=2, in_flight=in_flight, merge="crop").upscale(image)
    # every slot is the runner's again (the next image would wait forever for a leaked one)
    assert lent(runner) == 0
    assert Upscaler(runner, overlap=4, batch=2, in_flight=in_flight).upscale(image).shape[0] == 280
    huge = Upscaler(OneBad(3e38, 3e38), overlap=4, batch=2, in_flight=in_flight, merge="crop")
    with np.errstate(over="raise"):  # the sum overflows, quietly
        assert huge.upscale(image).shape == (280, 212, 3)


class Spoiled(NullRunner):
    """Batches of one 16x16 tile; NaN at `spot` of the output of batch `at` (a copy: the
    stand-in's pattern stays clean); `submitted` counts the batches."""

    def __init__(self, at: int, spot: tuple) -> None:
        super().__init__(FACTS.with_sizes((16, 16), 1), device_ms=1)
        self.at, self.spot, self.submitted = at, spot, 0

    def _submit(self, batch: np.ndarray) -> Pending:
        pending = super()._submit(batch)
        self.submitted += 1
        if self.submitted - 1 != self.at:
            return pending

        def spoil(leased: Leased) -> Leased:
            out = leased.take()
            out[self.spot] = np.nan
            return Leased(out)

        return pending.then(spoil)


@pytest.mark.parametrize("merge", ["crop", "feather"])
def test_values_are_checked_where_they_reach_the_image(merge: str) -> None:
    """After an image's first batch, its values are checked in the image itself: NaN where a
    tile's merge weight is 0 changes nothing and passes; NaN that reaches the image fails
    `upscale` while the rest is merged (the image stops there, not after its last batch), and
    `upscale_float`."""
    image = texture(100, 100)  # 8 x 8 tiles of 16 at overlap 4, one per batch

    def upscaler(runner: NullRunner) -> Upscaler:
        return Upscaler(runner, overlap=4, merge=merge)

    clean = upscaler(null(16, 1)).upscale(image)
    interior = 9  # the second row's second tile: the next tiles cover its last pixels
    dropped = Spoiled(interior, (0, slice(None), slice(61, 64), slice(61, 64)))
    np.testing.assert_array_equal(upscaler(dropped).upscale(image), clean)
    kept = Spoiled(interior, (0, 1, 30, 30))
    with pytest.raises(LBNetError, match="NaN or infinite"):
        upscaler(kept).upscale(image)
    assert kept.submitted < 48  # of 64: stopped once the band holding the NaN was rounded
    with pytest.raises(LBNetError, match="NaN or infinite"):
        upscaler(Spoiled(interior, (0, 1, 30, 30))).upscale_float(image)


def test_upscalers_sharing_a_runner_in_threads_all_finish() -> None:
    """Two images' batches each hold slots until merged in their own order: without one image
    at a time per leasing runner, each could wait for a slot the other holds (it did: both
    threads stopped at their first image)."""
    runner = NullRunner(FACTS.with_sizes((16, 16), 1))
    image = texture(40, 40)
    done = [0, 0, 0]

    def work(i: int) -> None:
        upscaler = Upscaler(runner, overlap=4)
        for _ in range(40):
            upscaler.upscale(image)
            done[i] += 1

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert done == [40, 40, 40] and lent(runner) == 0


@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_stop_anywhere_gives_every_slot_back(
    stop: type[BaseException], in_flight: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error or Ctrl-C in the merge (a progress callback), or while the oldest batch is
    awaited (an interrupt lands there most), and a lease dropped unreleased: the runner gets
    every slot back (a kept one made the next image, close() and exit wait forever)."""
    from concurrent.futures import Future

    runner = null(device_ms=2)
    image = texture(70, 53)

    def progress(done: int, total: int) -> None:
        if done == 3:
            raise stop("stop")

    upscaler = Upscaler(runner, overlap=4, batch=2, in_flight=in_flight)
    with pytest.raises(stop):
        upscaler.upscale(image, progress)
    assert lent(runner) == 0
    calls = itertools.count()
    result = Future.result

    def interrupted(self: Future, timeout: float | None = None) -> object:
        value = result(self, timeout)
        if next(calls) == 2:  # the batch is back (its lease taken) when the interrupt lands
            raise stop("stop")
        return value

    monkeypatch.setattr(Future, "result", interrupted)
    with pytest.raises(stop):
        Upscaler(runner, overlap=4, batch=2, in_flight=2).upscale(image)
    monkeypatch.undo()
    assert lent(runner) == 0
    leased = runner.submit(np.zeros((2, 3, 16, 16), np.float32)).wait()
    assert lent(runner) == 1
    del leased  # dropped without release: collected, the buffer comes back
    assert lent(runner) == 0
    pending = runner.submit(np.zeros((2, 3, 16, 16), np.float32))
    assert runner._contexts.qsize() == runner.streams - 1
    assert runner._outputs.qsize() == runner.leases - 1
    del pending  # submitted, never waited for: waited for when collected, all given back
    assert lent(runner) == 0


def test_an_output_buffer_comes_back_only_after_the_device_is_done_with_it() -> None:
    """A batch's output buffer is given back after its device wait, whichever of its lease and
    its pending batch is released or collected first: the cycle collector frees them in any
    order (it gave the buffer back while the download was still queued); a batch is waited
    for once."""
    import gc

    runner = null(device_ms=30)
    events: list[str] = []
    finish, outputs = runner._finish, runner._outputs

    def finished(*args: object) -> None:
        finish(*args)  # type: ignore[arg-type]
        events.append("device done")

    class Outputs:  # the runner's queue of free output buffers, telling when one comes back
        get, qsize = outputs.get, outputs.qsize

        def put(self, out: np.ndarray) -> None:
            events.append("buffer back")
            outputs.put(out)

    runner._finish, runner._outputs = finished, Outputs()  # type: ignore[method-assign,assignment]
    x = np.zeros((2, 3, 16, 16), np.float32)

    class Cycle:
        pass

    gc.disable()
    try:
        for _ in range(5):  # the collector's order varies: several cycles
            held = Cycle()
            held.me, held.pending = held, runner.submit(x)  # type: ignore[attr-defined]
            del held
            gc.collect()
    finally:
        gc.enable()
    assert events == ["device done", "buffer back"] * 5
    assert lent(runner) == 0
    pending = runner.submit(x)
    pending.wait().release()
    with pytest.raises(RuntimeError, match="waited for once"):
        pending.wait()
    assert lent(runner) == 0


def test_unit_range_stand_in_leases_copies() -> None:
    """A unit-range graph's output is scaled to 0..255 where it lies: in the stand-in's slot,
    made once, every batch would scale it again, so its leases are copies."""
    from dataclasses import replace

    runner = NullRunner(replace(FACTS.with_sizes((16, 16), 2), io="unit"))
    assert not runner.lends_buffers
    x = np.zeros((2, 3, 16, 16), np.float32)
    first = runner.submit(x).wait()
    assert first.owned and lent(runner) == 0
    np.testing.assert_array_equal(runner.submit(x).wait().out, first.out)
    np.testing.assert_array_equal(runner.infer(x), first.out)


@pytest.mark.parametrize("merge", ["crop", "feather"])
def test_rows_the_merger_calls_final_are_never_written_again(merge: str) -> None:
    """`upscale` rounds the rows `final_rows` names while later tiles are merged: no tile may
    write them afterwards; tiles out of the grid's order are refused (the rows would lie)."""
    from lbnet_deploy.runtime.tiling import Merger, TileGrid

    rng = np.random.default_rng(2)
    grid = TileGrid(61, 47, 16, 16, 6)
    merger = Merger(grid, 3, merge)
    frozen = np.zeros((3, 0, 3 * 47), np.float32)
    for i, tile in enumerate(grid.tiles()):
        merger.add(tile, rng.normal(100, 50, (3, 48, 48)).astype(np.float32))
        assert merger.result()[:, : frozen.shape[1]].tobytes() == frozen.tobytes()
        frozen = merger.result()[:, : merger.final_rows].copy()
        if i + 1 == len(grid.cols):  # the first tile row in: rows above the next are final
            assert 3 * grid.rows[1] <= merger.final_rows < 3 * (grid.rows[0] + grid.tile_h)
    assert frozen.shape[1] == 3 * 61  # all final at the end
    fresh = Merger(grid, 3, merge)
    with pytest.raises(ValueError, match="order"):
        fresh.add(grid.tiles()[1], np.zeros((3, 48, 48), np.float32))
