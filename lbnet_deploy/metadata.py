"""The facts an exported file carries (ONNX `lbnet.*` metadata_props, the engine sidecar's
`lbnet` map), read into one typed `ModelFacts` and checked in one place: a file that claims to
be LBNet but is not gets one line, never a traceback. Plain strings on disk; no onnx or torch
import here, so the runtime reads the same facts back from a file alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, cast, get_args

from lbnet_deploy.descriptor import VARIANTS, ModelDescriptor
from lbnet_deploy.errors import LBNetError

PREFIX = "lbnet."
# The precisions, in one place. A model file is FP32, FP16 or INT8 (PRECISIONS); a name or
# checkpoint is exported to FP32 or FP16 (EXPORTED; INT8 is made by `calibrate`); a backend may
# also compute an FP32 graph in a precision it sets when opening it (COMPUTE: OpenVINO's bf16,
# and bf16-attn: only the Transformer's matrix products, attention and linear layers, in BF16,
# everything else FP32).
PRECISIONS = ("fp32", "fp16", "int8")
EXPORTED = ("fp32", "fp16")
COMPUTE = ("bf16", "bf16-attn")
RUNS = PRECISIONS + COMPUTE  # what a run may be timed or checked in

# How the ~16 runs of each head are laid out for MatMul -> Softmax -> MatMul, orthogonal to
# static/dynamic. "batched": (B, h, m, c, d) with keys computed transposed, the form TensorRT
# fuses (engines). "flat": the runs as the batch, heads second, (B*m, h, c, d), each q/k/v one
# Transpose from the token-major projections: the standard multi-head attention pattern, which
# OpenVINO's CPU plugin fuses with its transposes into one kernel (its Snippets MHA; it does not
# for the 5-D form). "flat16": flat with the head dim zero-padded to a multiple of 16 (exact:
# zero q/k columns add nothing to the scores, zero v columns meet zero proj columns), so AMX's
# BF16 tiles are whole. Measured per backend in benchmarks/studies/cpu_backends.py.
Form = Literal["batched", "flat", "flat16"]
FORMS: tuple[Form, ...] = get_args(Form)

# The pixel range of a graph's input and output (`lbnet.io`): "255" is the paper's (rgb_range
# 255, the checkpoints' own), "unit" is 0..1, the convention chaiNNer, vs-mlrt, spandrel and
# OpenModelDB files follow; `export` writes unit files by default (IO_FOR_TOOLS), the product's
# own cache keeps the paper's range. The scaling is folded into the first and last 1x1 convs, so
# both are the same graph otherwise. A file without the key (exported before it) is "255".
IO = Literal["unit", "255"]
IO_KINDS: tuple[IO, ...] = get_args(IO)
IO_PEAK: dict[str, float] = {"unit": 1.0, "255": 255.0}  # white in the graph's input and output
IO_FOR_TOOLS: IO = "unit"

# Peak inference memory model, fitted to ORT CPU peak RSS above the loaded session (LBNet-T x4,
# dynamic graph, batch 1): 1024 tokens +16 MiB, 4096 +100, 9216 +365, 16384 +991, 25600 +2277,
# 36864 +4451 MiB. Least squares: 2.03 x the banded score matrices (h * N^2/16 floats: all 16
# runs are one batched MatMul, scores and softmax both live) + 23 x a 9F x N token tensor;
# within 20 MiB at every point. Rounded up for a margin.
ATTN_FACTOR = 2.1
TOKEN_FACTOR = 24


def to_metadata(desc: ModelDescriptor, **extra: object) -> dict[str, str]:
    """Descriptor plus export facts (input size, precision, tool version) as flat strings."""
    facts = {**desc.to_dict(), **extra}
    return {PREFIX + k: str(v) for k, v in facts.items()}


def from_metadata(props: Mapping[str, str]) -> dict[str, str]:
    """Our keys without the prefix; an empty dict means the file was not made by lbnet-deploy."""
    return {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}


@dataclass(frozen=True)
class ModelFacts:
    """What a model file (ONNX graph, engine) or a loaded model computes: the network, the
    precision it runs in, and the sizes it takes. Every runner carries one."""

    model: ModelDescriptor
    precision: str = "fp32"
    input_size: tuple[int, int] | None = None  # fixed (height, width) of LR input, None: any
    batch: int | None = None  # fixed batch, None: any
    io: IO = "255"  # the graph's pixel range (IO): runners feed it that and give back 0..255
    # other lbnet.* keys, as written (not part of the hash: a dict is not hashable)
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def scale(self) -> int:
        return self.model.scale

    @property
    def variant(self) -> str:
        return self.model.variant

    @property
    def peak(self) -> float:
        """White in the graph's input and output: 255.0, or 1.0 for a unit graph."""
        return IO_PEAK[self.io]

    def inference_bytes(self, tokens: int, batch: int = 1) -> int:
        """Peak inference memory for `batch` LR tiles of `tokens` pixels each (see ATTN_FACTOR):
        a property of the model, which the tiler plans with."""
        m = self.model
        scores = m.heads * tokens * tokens / 16 * 4
        token_tensor = 9 * m.n_feats * tokens * 4
        return int(batch * (ATTN_FACTOR * scores + TOKEN_FACTOR * token_tensor))

    def with_sizes(self, input_size: tuple[int, int] | None, batch: int | None) -> ModelFacts:
        return replace(self, input_size=input_size, batch=batch)


def _int(facts: Mapping[str, str], key: str, source: str, default: int | None = None) -> int:
    value = facts.get(key)
    if value is None and default is not None:
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise LBNetError(f"{source}: metadata lbnet.{key} is {value!r}, not a number") from None
    if number < 0 or (number == 0 and key not in ("params", "recursions")):
        raise LBNetError(f"{source}: metadata lbnet.{key} is {number}, out of range")
    return number


def _size(text: str | None, source: str) -> tuple[int, int] | None:
    if text is None or text == "dynamic":
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LBNetError(f"{source}: metadata lbnet.input_size is {text!r}, not HxW") from None
    if h < 1 or w < 1:
        raise LBNetError(f"{source}: metadata lbnet.input_size is {text!r}, out of range")
    return h, w


def io_kind(facts: Mapping[str, str], source: str) -> IO:
    """The checked `io` of our metadata (prefix dropped); "255" where a file has none (made
    before the key, or not by us)."""
    io = facts.get("io", "255")
    if io not in IO_KINDS:
        raise LBNetError(
            f"{source}: metadata says io {io!r}; known: {', '.join(IO_KINDS)} (0..1 or 0..255)"
        )
    return cast(IO, io)


def model_facts(facts: Mapping[str, str], source: str) -> ModelFacts:
    """Our metadata (prefix dropped) -> checked ModelFacts; `source` names the file in errors."""
    if not isinstance(facts, Mapping) or not facts:
        raise LBNetError(f"{source} was not exported by lbnet-deploy (no lbnet.* metadata)")
    if "scale" not in facts:
        raise LBNetError(f"{source}: its lbnet map names no model scale")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in facts.items()):
        raise LBNetError(f"{source}: lbnet metadata must map names to strings")
    variant = facts.get("variant")
    if variant not in VARIANTS:
        raise LBNetError(f"{source}: metadata names variant {variant!r}, not LBNet or LBNet-T")
    scale = _int(facts, "scale", source)
    if scale not in (2, 3, 4):
        raise LBNetError(f"{source}: metadata says scale {scale}; LBNet has x2, x3 and x4")
    f_default, heads_default, _ = VARIANTS[variant]
    model = ModelDescriptor(
        variant=variant,
        scale=scale,
        n_feats=_int(facts, "n_feats", source, f_default),
        heads=_int(facts, "heads", source, heads_default),
        attn_dim=_int(facts, "attn_dim", source, 1),
        params=_int(facts, "params", source, 0),
        sha256=facts.get("sha256", ""),
        recursions=_int(facts, "recursions", source, 3),
    )
    precision = facts.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise LBNetError(
            f"{source}: metadata says precision {precision!r}; known: {', '.join(PRECISIONS)}"
        )
    io = io_kind(facts, source)
    batch_text = facts.get("batch", "dynamic")
    batch = None if batch_text in ("dynamic", "None", "dyn") else _int(facts, "batch", source)
    known = {"variant", "scale", "n_feats", "heads", "attn_dim", "params", "sha256",
             "recursions", "precision", "batch", "input_size", "io"}  # fmt: skip
    return ModelFacts(
        model, precision, _size(facts.get("input_size"), source), batch, io,
        {k: v for k, v in facts.items() if k not in known},
    )  # fmt: skip
