"""Tile geometry and merging, in plain numpy: where tiles go, how their outputs are joined.

Tiles along an axis are `tile` long, consecutive tiles share at least `overlap` pixels and the
last tile is flush with the border, so every tile has the same size (one batch shape, one
fixed-shape engine). Two merges:
- "crop": each output pixel comes from the tile where it is farthest from a tile edge, i.e. the
  cut between two tiles lies in the middle of their overlap (per axis).
- "feather": a linear cross-fade across the middle half of each overlap, centred on that cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise, product

import numpy as np

MERGES = ("crop", "feather")


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets covering [0, length); a single tile when it fits."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride < 1:
        raise ValueError(f"overlap {overlap} leaves no stride for tile {tile}")
    return [*range(0, length - tile, stride), length - tile]


def axis_cuts(starts: list[int], tile: int, length: int) -> list[int]:
    """Boundaries of the region each tile owns: the middle of each overlap, plus the ends."""
    mids = [(nxt + cur + tile) // 2 for cur, nxt in pairwise(starts)]
    return [0, *mids, length]


@dataclass(frozen=True)
class Tile:
    y: int
    x: int


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an H x W image go (LR pixels)."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int

    @property
    def rows(self) -> list[int]:
        return axis_starts(self.height, self.tile_h, self.overlap)

    @property
    def cols(self) -> list[int]:
        return axis_starts(self.width, self.tile_w, self.overlap)

    def tiles(self) -> list[Tile]:
        return [Tile(y, x) for y, x in product(self.rows, self.cols)]


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad HxWxC bottom/right to at least height x width: reflect where the image is long
    enough (closer to real content than zeros), else replicate the edge."""
    ph, pw = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
    for axis, pad in ((0, ph), (1, pw)):
        if pad:
            widths = [(0, 0)] * image.ndim
            widths[axis] = (0, pad)
            # reflect needs more pixels than it pads; a 1-pixel-wide image can only be repeated
            if pad < image.shape[axis]:
                image = np.pad(image, widths, mode="reflect")
            else:
                image = np.pad(image, widths, mode="edge")
    return image


def _axis_weights(starts: list[int], tile: int, length: int, scale: int) -> list[np.ndarray]:
    """Per tile, its 1-D feather weight over its s*tile output pixels."""
    cuts = axis_cuts(starts, tile, length)
    pos = np.arange(scale * tile, dtype=np.float32) + 0.5
    weights = []
    for i, start in enumerate(starts):
        x = pos + scale * start
        w = np.ones_like(pos)
        if i > 0:  # fade in around the cut shared with the previous tile
            w *= _ramp(x - scale * cuts[i], scale * (starts[i - 1] + tile - start) / 4)
        if i < len(starts) - 1:
            w *= _ramp(scale * cuts[i + 1] - x, scale * (start + tile - starts[i + 1]) / 4)
        weights.append(w)
    return weights


def _ramp(distance: np.ndarray, half: float) -> np.ndarray:
    """0 -> 1 across `distance` -half..half past a cut; tiles that only touch (overlap 0, or
    the last tile flush with the one before) get a hard step there instead of 0/0."""
    if half <= 0:
        return (distance > 0).astype(np.float32)
    return np.clip((distance + half) / (2 * half), 0, 1)


class Merger:
    """Accumulates tile outputs (3 x s*th x s*tw) into the s*H x s*W result.

    `canvas`: a float32 3 x s*H x s*W array to merge into (its old values are never read:
    every pixel's first contribution is written, not added), else a new one.
    """

    def __init__(
        self, grid: TileGrid, scale: int, merge: str = "crop", canvas: np.ndarray | None = None
    ) -> None:
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        self.grid, self.scale, self.merge = grid, scale, merge
        s = scale
        shape = (3, s * grid.height, s * grid.width)
        if canvas is not None and (canvas.shape != shape or canvas.dtype != np.float32):
            raise ValueError(f"canvas must be float32 {shape}, got {canvas.dtype} {canvas.shape}")
        # np.empty: its pages are touched once, by the merge itself (zeros would be faulted in
        # and then overwritten: ~10 ms of a 2048x2048 x4 merge)
        self.out = np.empty(shape, np.float32) if canvas is None else canvas
        rows, cols = grid.rows, grid.cols
        self._row_cut = dict(
            zip(rows, _pairs(axis_cuts(rows, grid.tile_h, grid.height)), strict=True)
        )
        self._col_cut = dict(
            zip(cols, _pairs(axis_cuts(cols, grid.tile_w, grid.width)), strict=True)
        )
        if merge == "feather":
            # per axis the feather weights sum to 1 at every pixel (tested), so their outer
            # products do too: no normalisation array (268 MB at 2048x2048 x4) is needed
            self._row_w = dict(
                zip(rows, _axis_weights(rows, grid.tile_h, grid.height, s), strict=True)
            )
            self._col_w = dict(
                zip(cols, _axis_weights(cols, grid.tile_w, grid.width, s), strict=True)
            )
            self._row_spans = _axis_spans(rows, self._row_w, s)
            self._col_spans = _axis_spans(cols, self._col_w, s)
        # the first output row each tile row writes: once the rows before it are merged, the
        # output above it is final (`final_rows`)
        if merge == "crop":
            self._first_rows = [s * self._row_cut[y][0] for y in rows]
        else:
            self._first_rows = [s * y + self._row_spans[y][0].start for y in rows]
        self._order = grid.tiles()
        self._added = 0

    def add(self, tile: Tile, sr: np.ndarray) -> None:
        """Add one tile's 3 x s*th x s*tw output; tiles come in `grid.tiles()` order."""
        if self._added >= len(self._order) or tile != self._order[self._added]:
            raise ValueError(f"tile {tile} added out of the grid's order")
        self._added += 1
        s = self.scale
        if self.merge == "crop":
            (y0, y1), (x0, x1) = self._row_cut[tile.y], self._col_cut[tile.x]
            self.out[:, s * y0 : s * y1, s * x0 : s * x1] = sr[
                :, s * (y0 - tile.y) : s * (y1 - tile.y), s * (x0 - tile.x) : s * (x1 - tile.x)
            ]
            return
        row_w, col_w = self._row_w[tile.y], self._col_w[tile.x]
        # Only where the weight is not 0. The first tile to reach a pixel writes its term, the
        # others add theirs, in grid order: the sums a zero-filled canvas would hold, to the bit
        # (0 + x is x; only a -0 term would have become +0, and rounds alike). Where both
        # weights are 1 and no earlier tile reaches the pixel, the tile is copied, no product
        # (two thirds of a 96-pixel tile at overlap 16; the merge took 72 of 125 ms per
        # 512x512 image at batch 8 with products everywhere). A weight 1 on one axis
        # multiplies nothing.
        y, x = s * tile.y, s * tile.x
        for r in self._row_spans[tile.y]:
            for c in self._col_spans[tile.x]:
                canvas = self.out[:, y + r.start : y + r.stop, x + c.start : x + c.stop]
                part = sr[:, r.start : r.stop, c.start : c.stop]
                if r.ones and c.ones and r.first and c.first:
                    canvas[...] = part
                    continue
                if r.ones:
                    w = col_w[c.start : c.stop]
                elif c.ones:
                    w = row_w[r.start : r.stop, None]
                else:
                    w = np.outer(row_w[r.start : r.stop], col_w[c.start : c.stop])
                if r.first and c.first:
                    np.multiply(part, w, out=canvas)
                else:
                    canvas += part * w

    @property
    def final_rows(self) -> int:
        """Output rows [0, final_rows) that no tile still to come writes: final, to be rounded
        while the rest is merged."""
        done = self._added // len(self.grid.cols)  # whole tile rows merged
        return self._first_rows[done] if done < len(self._first_rows) else self.out.shape[1]

    def result(self) -> np.ndarray:
        """The merged 3 x sH x sW float image (the accumulator itself, not a copy)."""
        return self.out


@dataclass(frozen=True)
class Span:
    """Part of one tile's output along one axis (tile coordinates, [start, stop)) where its
    weight is not 0: all 1 (`ones`) or not, and whether an earlier tile on this axis reaches
    it (`first`: none does)."""

    start: int
    stop: int
    ones: bool
    first: bool


def _axis_spans(
    starts: list[int], weights: dict[int, np.ndarray], scale: int
) -> dict[int, list[Span]]:
    """Per tile start, the spans of its nonzero weights: the fade-in, the ones, the fade-out,
    cut wherever another tile's span begins or ends, so each span is reached by the same
    tiles throughout (then the first tile reaching a canvas pixel is the one where the span
    is `first` on both axes: grid order is row-major)."""
    nonzero = {}  # start -> [(begin, end, all ones)], output coordinates
    for start in starts:
        w = weights[start]
        nonzero[start] = [
            (scale * start + a, scale * start + b, ones) for (a, b), ones in _spans(w)
        ]
    bounds = sorted({edge for spans in nonzero.values() for a, b, _ in spans for edge in (a, b)})
    result: dict[int, list[Span]] = {}
    for i, start in enumerate(starts):
        earlier = [(a, b) for prev in starts[:i] for a, b, _ in nonzero[prev]]
        pieces = []
        for a, b, ones in nonzero[start]:
            cuts = [a, *(e for e in bounds if a < e < b), b]
            for lo, hi in pairwise(cuts):
                first = not any(ea < hi and lo < eb for ea, eb in earlier)
                pieces.append(Span(lo - scale * start, hi - scale * start, ones, first))
        result[start] = pieces
    return result


def _spans(weights: np.ndarray) -> list[tuple[tuple[int, int], bool]]:
    """The nonzero weights of one axis as up to three spans [start, stop), each with whether
    its weights are all 1: the fade-in, the ones, the fade-out (the ones span may be empty:
    a tile shorter than its two fades)."""
    nonzero, ones = np.flatnonzero(weights), np.flatnonzero(weights == 1)
    first, last = int(nonzero[0]), int(nonzero[-1]) + 1
    if not ones.size:
        return [((first, last), False)]
    lo, hi = int(ones[0]), int(ones[-1]) + 1  # contiguous: a rise to 1, then a fall from it
    spans = [((first, lo), False), ((lo, hi), True), ((hi, last), False)]
    return [(span, all_ones) for span, all_ones in spans if span[0] < span[1]]


def _pairs(cuts: list[int]) -> list[tuple[int, int]]:
    return list(pairwise(cuts))
