"""Options that several commands share, and their parsing: one place for each."""

from __future__ import annotations

import argparse

from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import COMPUTE, EXPORTED
from lbnet_deploy.runtime.registry import AUTO, BACKENDS, DEFAULT, help_text


def parse_size(text: str) -> tuple[int, int]:
    """'128x96' -> (128, 96): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1, got {text!r}")
    return h, w


def decibels(text: str) -> float:
    """A PSNR bound: a number of dB, at least 0 (not NaN, not infinite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dB, got {text!r}") from None
    if not 0 <= value < float("inf"):  # also NaN
        raise argparse.ArgumentTypeError(f"must be a number of dB >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An option that counts something (batch, tile, threads): a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_runtime_options(
    p: argparse.ArgumentParser, budget_mb: int | None = 2048, backend: str = DEFAULT
) -> None:
    """Options every command that runs a model shares (budget None: decided by the command;
    `backend`: the command's default backend)."""
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="expected scale (checked)")
    p.add_argument(
        "--backend",
        choices=(AUTO, *BACKENDS),
        default=backend,
        help=f"{AUTO}: the fastest installed CPU backend for the model at the precision asked "
        f"for, measured once on this machine (engine files: tensorrt); {help_text()}. Default "
        f"{backend}. tensorrt "
        "builds a --tile x --tile engine on first use (engine files choose it by themselves)",
    )
    p.add_argument(
        "--tile",
        type=positive_int,
        help="LR tile size (default: whole image if it fits the budget, else 96)",
    )
    p.add_argument("--overlap", type=int, default=16, help="tile overlap in LR pixels (16)")
    p.add_argument("--merge", choices=("feather", "crop"), default="feather")
    p.add_argument(
        "--memory-budget",
        type=int,
        default=budget_mb,
        metavar="MB",
        help="peak inference memory to plan tiles for (default: "
        + (f"{budget_mb} MB)" if budget_mb else "75%% of available memory)"),
    )
    p.add_argument("--batch", type=positive_int, default=1, help="tiles per inference call")
    p.add_argument(
        "--precision",
        choices=EXPORTED + COMPUTE,
        help="for a model name or .pt: the FP32 (default) or FP16 graph, converted once and "
        "cached (fp16 is the fast path on GPUs: tensorrt, ort-cuda); bf16: the FP32 graph "
        "computed in BF16 by OpenVINO (--backend openvino, CPUs with AVX512-BF16 or AMX); "
        "bf16-attn: only its Transformer's matrix products (attention, linear layers) in BF16 "
        "(FP32 accuracy: PRECISION.md; "
        "without --precision, --backend auto times it too where the CPU has BF16; "
        "--precision fp32 keeps FP32 throughout, also for an FP32 .onnx file)",
    )
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads (default and most: CPUs available)"
    )
    add_cuda_graph_option(p)
    add_url_option(p)


def add_cuda_graph_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="tensorrt: enqueue each batch instead of replaying a CUDA graph (to compare)",
    )


def split_precision(text: str) -> tuple[str, str | None]:
    """`MODEL[@PRECISION]` -> (model, precision or None): `lbnet-t-x4@fp16`; an `@` followed
    by anything but a precision `--precision` takes stays part of the model's name or path."""
    spec, _, precision = text.rpartition("@")
    if spec and precision in EXPORTED + COMPUTE:
        return spec, precision
    return text, None


def add_url_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        metavar="HOST:PORT",
        help="the Triton server (gRPC) of --backend triton, whose --model names a served image "
        "model or a model name (lbnet-t-x4: lbnet_t_x4_fp32); default 127.0.0.1:8001",
    )


def check_scale(actual: int, asked: int | None, model: str) -> None:
    if asked is not None and asked != actual:
        raise LBNetError(f"{model} is a x{actual} model, but --scale {asked} was given")
