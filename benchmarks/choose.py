"""`--backend auto`: the fastest installed CPU backend for a model on this machine, measured.

No CPU backend wins everywhere. The interleaved CPU study (`benchmarks/studies/cpu_backends.py`)
found ONNX Runtime fastest at 128x128 and 192x192 and OpenVINO at 64x64 on an AVX2-only EPYC,
and OpenVINO ahead on AVX-512 machines. So the choice is measured where it is made: the first
time a model runs with `auto` on a machine, each installed CPU backend of `CANDIDATES` runs the
graph `upscale` would give it, at the tile size (the shape most of a big image runs at),
interleaved, and the fastest median wins. The result is kept in the cache, keyed by the CPU, the
threads, the graph file's hash, the precision and the backends' versions, so later runs on the
same machine cost nothing. BF16 is never chosen by itself: a precision the user did not ask for
is not the fastest FP32 backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.loaders import ModelSpec, OnnxFromSpec, open_runner
from lbnet_deploy.metadata import COMPUTE
from lbnet_deploy.runtime.atomic import write_json_atomic
from lbnet_deploy.runtime.onnxrt import bounded_threads
from lbnet_deploy.runtime.registry import AUTO, BACKENDS
from lbnet_deploy.runtime.upscaler import DEFAULT_TILE
from lbnet_deploy.weights import cache_root, sha256_file

from .machine import cpu_flags, cpu_model, library_versions
from .timing import interleaved, sample_input

log = logging.getLogger("lbnet_deploy")

CANDIDATES = ("ort", "openvino")  # the CPU backends auto chooses among, ONNX Runtime first
# Another backend must beat ONNX Runtime by this much: closer than that, two runs of the same
# backend differ as much (interleaved medians of 5 here), and ONNX Runtime compiles nothing
# per input shape (OpenVINO: about a second per new whole-image size).
MARGIN = 1.05
WARMUP, ROUNDS = 1, 3


@dataclass(frozen=True)
class Choice:
    """The backend auto picked, and the medians it was picked by (empty: nothing to time)."""

    backend: str
    ms: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] | None = None
    why: str = ""

    def note(self) -> str:
        """For the summary line: why this backend."""
        if not self.ms:
            return f"auto: {self.why}"
        times = ", ".join(f"{name} {ms:.0f} ms" for name, ms in self.ms.items())
        h, w = self.size or (0, 0)
        if self.backend == min(self.ms, key=self.ms.__getitem__):
            return f"auto: fastest here at {h}x{w} ({times})"
        margin = f"{MARGIN - 1:.0%}"
        return f"auto: none of the others {margin} faster here at {h}x{w} ({times})"


def choose_backend(
    spec: str, precision: str | None = None, threads: int | None = None, scale: int | None = None
) -> Choice:
    """The backend `--backend auto` runs `spec` on (see the module docstring)."""
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
    if len(installed) < 2:
        # the one there is, or the first that could run it (its opening names what is missing)
        name = (installed or able)[0]
        return Choice(name, why=f"the only installed CPU backend that runs {wanted}")
    compute = wanted if wanted in COMPUTE else None
    graph = model_graph(model, wanted)
    key = choice_key(graph, installed, wanted, bounded_threads(threads))
    cached = _read_cache().get(key)
    if cached is not None:
        return cached
    choice = measure(graph, installed, threads, compute)
    _write_cache(key, choice)
    return choice


def model_graph(model: ModelSpec, precision: str) -> Path:
    """The ONNX file the backends would run: the file as given, else the cached export."""
    if model.is_onnx:
        return Path(model.spec)
    graph = "fp32" if precision in COMPUTE else precision
    return OnnxFromSpec(model, precision=graph)()


def choice_key(graph: Path, names: list[str], precision: str, threads: int) -> str:
    """What decides which backend is fastest: the CPU, threads, the graph, versions."""
    versions = library_versions()
    facts = {
        "cpu": cpu_model(),
        "flags": cpu_flags(),
        "threads": threads,
        "graph": sha256_file(graph),
        "precision": precision,
        "backends": {n: [versions.get(m) for m in BACKENDS[n].requires] for n in names},
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def measure(graph: Path, names: list[str], threads: int | None, compute: str | None) -> Choice:
    """Each backend on `graph` at its size (a dynamic graph: the tile size), interleaved."""
    runners = {n: open_runner(str(graph), n, threads, precision=compute) for n in names}
    size = next(iter(runners.values())).input_size or (DEFAULT_TILE, DEFAULT_TILE)
    x = sample_input(1, size)
    log.info(
        "choosing the CPU backend: timing %s on a %dx%d input (once per machine and model) ...",
        ", ".join(names), *size,
    )  # fmt: skip
    samples = interleaved({n: partial(r.infer, x) for n, r in runners.items()}, WARMUP, ROUNDS)
    ms = {n: round(statistics.median(s) * 1e3, 1) for n, s in samples.items()}
    best = min(ms, key=ms.__getitem__)
    if names[0] != best and ms[names[0]] < ms[best] * MARGIN:
        best = names[0]  # not clearly faster: keep the first (ONNX Runtime)
    return Choice(best, ms, size)


def _cache_file() -> Path:
    return cache_root() / "backend-choice.json"


def _read_cache() -> dict[str, Choice]:
    """Earlier choices; an unreadable or hand-edited file is measured again, never an error."""
    try:
        raw = json.loads(_cache_file().read_text())
        return {
            key: Choice(v["backend"], dict(v["ms"]), tuple(v["size"]))  # type: ignore[arg-type]
            for key, v in raw.items()
            if v.get("backend") in BACKENDS and v.get("backend") != AUTO
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_cache(key: str, choice: Choice) -> None:
    entries = {
        k: {"backend": c.backend, "ms": c.ms, "size": list(c.size or ())}
        for k, c in _read_cache().items()
    }
    entries[key] = {"backend": choice.backend, "ms": choice.ms, "size": list(choice.size or ())}
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_cache_file(), entries)
    except OSError as exc:  # a read-only cache: measured again next time, not an error
        log.warning("could not keep the backend choice in %s (%s)", _cache_file(), exc)
