"""`--backend auto`: the fastest installed CPU backend for a model on this machine, measured.

No CPU backend wins everywhere: the interleaved CPU study (`benchmarks/studies/cpu_backends.py`)
found different winners per size and per CPU (AVX2-only and AVX-512 EPYCs; on an AMX Xeon,
OpenVINO on its flat attention form at every size: README, "CPU backends"). So the choice is
measured where it is made: the first time a model runs with `auto` on a machine, each installed
CPU backend of `CANDIDATES` runs the graph the command runs (a name or checkpoint in the
attention form exported for that backend), at the tile size it will use (`--tile`, else the
Upscaler's; a fixed graph at its own size), interleaved, and the fastest median wins (ONNX
Runtime unless another is `MARGIN` faster). A dynamic graph is timed on first runs at new sizes
near the tile size, since every image that fits, or is smaller than a tile, runs whole at its
own size (OpenVINO's runner compiles a dynamic graph once with dynamic dims for those, and
statically only for a shape run twice in a row); a fixed graph on repeated runs at its size. The
result is kept in the cache, keyed by the CPU, the threads, the graph file's hash, the shape,
the precision and the versions, so later runs on the same machine cost nothing. A backend that
cannot open or run the graph is left out with a warning. Without `--precision`, a compute of
FP32 accuracy is a candidate too (`ACCURATE`: OpenVINO's bf16-attn, the Transformer's matrix
products in BF16, on a CPU that computes BF16), as PRECISION.md measures it within 0.01 dB of FP32
on Set5 and Set14 for every official checkpoint (`accuracy.within_bound`). Whole BF16 is never
chosen by itself: it is a precision the user asks for (`--precision bf16`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.loaders import ModelSpec, open_runner
from lbnet_deploy.metadata import COMPUTE, Form
from lbnet_deploy.runtime.atomic import write_json_atomic
from lbnet_deploy.runtime.backend import Runner
from lbnet_deploy.runtime.onnxrt import bounded_threads
from lbnet_deploy.runtime.registry import BACKENDS
from lbnet_deploy.runtime.upscaler import DEFAULT_TILE
from lbnet_deploy.weights import cache_root, sha256_file

from .accuracy import within_bound
from .machine import cpu_flags, cpu_model, library_versions
from .timing import interleaved, sample_input

log = logging.getLogger("lbnet_deploy")

CANDIDATES = ("ort", "openvino")  # the CPU backends auto chooses among, ONNX Runtime first
# (backend, compute) of FP32 accuracy, also timed where the request names no precision
ACCURATE = (("openvino", "bf16-attn"),)
# Another backend must beat ONNX Runtime by this much: closer than that, repeated interleaved
# runs of one backend differ as much here, and ONNX Runtime compiles nothing per input shape
# (OpenVINO: a compile per graph and per shape run twice in a row, which the timing leaves out).
MARGIN = 1.05
WARMUP, ROUNDS = 1, 3
RULE = 4  # bump when how the choice is measured changes: kept choices are then measured again
# (4: bf16-attn computes the linear layers in BF16 too, so its timings before are stale)


@dataclass(frozen=True)
class Choice:
    """The backend auto picked, and the medians it was picked by (empty: nothing to time)."""

    backend: str
    ms: dict[str, float] = field(default_factory=dict)  # per contender (`label`)
    size: tuple[int, int] | None = None
    why: str = ""
    new_shapes: bool = False  # timed on first runs at new shapes (as whole images run)
    # the chosen backend's runner where choosing opened it (the command runs it, rather than
    # opening a second session or, on OpenVINO, compiling again); never kept in the cache
    runner: Runner | None = field(default=None, compare=False, repr=False)
    compute: str | None = None  # a compute precision auto chose to open `backend` with

    @property
    def label(self) -> str:
        """The contender's name in `ms`: the backend, and the compute auto chose."""
        return f"{self.backend} {self.compute}" if self.compute else self.backend

    def note(self) -> str:
        """For the summary line: why this backend."""
        if not self.ms or self.size is None:
            return f"auto: {self.why}"
        times = ", ".join(f"{name} {ms:.0f} ms" for name, ms in self.ms.items())
        h, w = self.size
        at = f"on first runs at new sizes near {h}x{w}" if self.new_shapes else f"at {h}x{w}"
        if self.label == min(self.ms, key=self.ms.__getitem__):
            return f"auto: fastest here {at} ({times})"
        margin = f"{MARGIN - 1:.0%}"
        return f"auto: none of the others {margin} faster here {at} ({times})"


def choose_backend(
    spec: str,
    precision: str | None = None,
    threads: int | None = None,
    scale: int | None = None,
    tile: int | None = None,
    batch: int = 1,
) -> Choice:
    """The backend `--backend auto` runs `spec` on (see the module docstring), timed at `tile`
    (default: the Upscaler's tile size) with `batch` tiles per run."""
    model = ModelSpec(spec, scale)
    if model.is_engine:
        return Choice("tensorrt", why="a TensorRT engine runs on tensorrt")
    if spec.startswith("bicubic"):
        return Choice("ort", why="the bicubic baseline runs in numpy")
    wanted = precision or "fp32"
    able = [n for n in CANDIDATES if wanted in BACKENDS[n].precisions]
    if not able:
        raise LBNetError(f"no CPU backend runs {wanted}; name one with --backend")
    installed = [n for n in able if not BACKENDS[n].missing()]
    accurate = _accurate_computes(installed) if precision is None else []
    if len(installed) + len(accurate) < 2:
        # the one there is, or the first that could run it (its opening names what is missing)
        return _only((installed or able)[0], wanted)
    # the first opens as the command would: every check of the request (and the export) comes
    # before any timing
    compute = wanted if wanted in COMPUTE else "fp32"
    first = open_runner(spec, installed[0], threads, precision=precision, scale=scale)
    if first.describe().get("precision") != "fp32":
        accurate = []  # a compute is set over FP32 graphs only (an FP16 or INT8 file)
        if len(installed) < 2:  # nothing left to time it against
            return _only(installed[0], wanted, first)
    size = first.input_size or (tile or DEFAULT_TILE,) * 2
    # a dynamic graph runs every image that fits (or is smaller than --tile) whole, at its own
    # size: what counts is a first run at a new shape, which OpenVINO compiles for. Set5 took
    # 5.9 s on OpenVINO against 2.3 s on ONNX Runtime here (5.4 and 2.4 s with --tile 96),
    # though OpenVINO was 11-18% faster on repeated 96x96 runs
    new_shapes = first.input_size is None
    graph = Path(first.describe()["path"])  # type: ignore[arg-type]
    shape = (batch, *size)
    # a name or checkpoint runs on each backend in the attention form exported for it (the
    # graph's hash and the forms say what runs); a file is the same graph everywhere
    contenders = {n: (n, precision) for n in installed} | {f"{n} {c}": (n, c) for n, c in accurate}
    forms = {
        label: BACKENDS[n].form(c or compute) for label, (n, c) in contenders.items()
    } if not model.is_file else {}  # fmt: skip
    timed = (*shape, new_shapes)
    key = choice_key(graph, forms or list(contenders), wanted, bounded_threads(threads), timed)
    cached = _read_cache().get(key)
    if cached is not None:
        return replace(cached, runner=first) if cached.label == installed[0] else cached
    runners = {installed[0]: first}
    for label, (name, c) in list(contenders.items())[1:]:
        try:
            runners[label] = open_runner(spec, name, threads, precision=c, scale=scale)
        except LBNetError as exc:  # a backend that cannot run this graph is not a candidate
            log.warning("auto: not timing %s: %s", label, exc)
    choice = measure(runners, shape, new_shapes)
    name, chosen = contenders.get(choice.backend, (choice.backend, None))
    choice = replace(choice, backend=name, compute=chosen if chosen != precision else None)
    if len(choice.ms) == len(contenders):  # a choice without a candidate is not kept
        _write_cache(key, choice)
    return replace(choice, runner=runners.get(choice.label))


def _only(name: str, wanted: str, runner: Runner | None = None) -> Choice:
    """Nothing to time `name` against: chosen as it is."""
    return Choice(name, why=f"the only installed CPU backend that runs {wanted}", runner=runner)


def _accurate_computes(installed: list[str]) -> list[tuple[str, str]]:
    """The `ACCURATE` (backend, compute) pairs this machine can run and PRECISION.md measured
    within 0.01 dB of FP32 on every official checkpoint."""
    pairs = []
    for name, compute in ACCURATE:
        check = BACKENDS[name].check_compute
        if name not in installed or within_bound(compute) is not True:
            continue
        try:
            if check is not None:
                check(compute)  # a CPU without BF16: not a candidate
        except LBNetError:
            continue
        pairs.append((name, compute))
    return pairs


def open_auto(
    spec: str,
    threads: int | None = None,
    *,
    precision: str | None = None,
    scale: int | None = None,
    tile: int | None = None,
    batch: int = 1,
    cuda_graph: bool = True,
) -> tuple[Runner, Choice]:
    """The runner `--backend auto` runs `spec` on (the one choosing opened, where it did), and
    the choice, for the summary line (`cuda_graph`: for an engine file, which runs on
    tensorrt)."""
    choice = choose_backend(spec, precision, threads, scale, tile=tile, batch=batch)
    runner = choice.runner or open_runner(
        spec, choice.backend, threads, tile=tile, batch=batch, scale=scale,
        precision=choice.compute or precision, cuda_graph=cuda_graph,
    )  # fmt: skip
    return runner, choice


def choice_key(
    graph: Path,
    names: list[str] | dict[str, Form],
    precision: str,
    threads: int,
    shape: tuple[int, ...],
) -> str:
    """What decides which backend is fastest: the CPU, threads, the graph (and the attention
    form each backend runs it in, where `names` gives them) and the shape it is timed at, the
    versions of the backends and of this tool, and how the choice is made."""
    versions = library_versions()
    facts = {
        "cpu": cpu_model(),
        "flags": cpu_flags(),
        "threads": threads,
        "graph": sha256_file(graph),
        "shape": list(shape),
        "precision": precision,
        "backends": {n: [versions.get(m) for m in BACKENDS[n.split()[0]].requires] for n in names},
        "forms": names if isinstance(names, dict) else None,
        "lbnet-deploy": versions.get("lbnet-deploy"),
        "rule": [RULE, MARGIN, WARMUP, ROUNDS],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def measure(
    runners: dict[str, Runner], shape: tuple[int, int, int], new_shapes: bool = False
) -> Choice:
    """Each runner on a (batch, 3, h, w) input, interleaved; a runner that fails is dropped.
    `new_shapes`: timed on the first runs at `ROUNDS` sizes each runner has not seen."""
    batch, *size = shape
    x = sample_input(batch, (size[0], size[1]))
    log.info(
        "choosing the CPU backend: timing %s on a %dx%d input (once per machine and model) ...",
        ", ".join(runners), *size,
    )  # fmt: skip
    calls = {}
    for name, runner in runners.items():
        try:
            runner.infer(x)  # the warm-up run, also the check that it runs at all
        except (LBNetError, RuntimeError) as exc:
            log.warning("auto: not timing %s: %s", name, str(exc).splitlines()[0][:160])
            continue
        calls[name] = partial(runner.infer, x)
    if new_shapes:  # one interleaved round per new shape: each backend's first run at it
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for k in range(1, ROUNDS + 1):
            new = sample_input(batch, (size[0] + 8 * k, size[1] + 8 * k))
            timed = interleaved({n: partial(runners[n].infer, new) for n in calls}, 0, 1)
            for name, seconds in timed.items():
                samples[name] += seconds
    else:
        samples = interleaved(calls, WARMUP - 1, ROUNDS)
    ms = {n: round(statistics.median(s) * 1e3, 1) for n, s in samples.items()}
    first = next(iter(runners))
    if not ms:  # nothing ran: the command's own run of the first says why
        return Choice(first, why="no CPU backend ran the timing input")
    best = min(ms, key=ms.__getitem__)
    if best != first and first in ms and ms[first] < ms[best] * MARGIN:
        best = first  # not clearly faster: keep the first (ONNX Runtime)
    return Choice(best, ms, (size[0], size[1]), new_shapes=new_shapes)


def _cache_file() -> Path:
    return cache_root() / "backend-choice.json"


def _read_cache() -> dict[str, Choice]:
    """Earlier choices; an unreadable or hand-edited file is measured again, never an error."""
    try:
        raw = json.loads(_cache_file().read_text())
        kept = {}
        for key, v in raw.items():
            ms = {str(k): float(t) for k, t in v["ms"].items()}
            h, w = (int(d) for d in v["size"])
            compute = v.get("compute")
            choice = Choice(
                v["backend"], ms, (h, w), new_shapes=bool(v.get("new_shapes")), compute=compute
            )
            if (
                v["backend"] in CANDIDATES
                and (compute is None or (v["backend"], compute) in ACCURATE)
                and choice.label in ms
            ):
                kept[key] = choice
        return kept
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_cache(key: str, choice: Choice) -> None:
    def entry(c: Choice) -> dict[str, object]:
        size = list(c.size or ())
        return {
            "backend": c.backend, "compute": c.compute, "ms": c.ms, "size": size,
            "new_shapes": c.new_shapes,
        }  # fmt: skip

    entries = {k: entry(c) for k, c in _read_cache().items()}
    entries[key] = entry(choice)
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_cache_file(), entries)
    except (OSError, LBNetError) as exc:  # a read-only cache: measured again next time
        log.warning("could not keep the backend choice in %s (%s)", _cache_file(), exc)
