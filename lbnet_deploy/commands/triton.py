"""`lbnet-deploy triton`: an engine or ONNX graph -> a Triton Inference Server model folder;
with `--images`, a repository that serves whole images (an image model and a tile model)."""

from __future__ import annotations

import argparse

from lbnet_deploy.errors import LBNetError

from .options import positive_int

TILE_RUNNERS = ("ort", "openvino")  # the registry entries a Python tile model may run
# --images options: argparse dest -> ImageSettings field (precision: the graph of a name)
IMAGE_OPTIONS = {
    "tile": "tile", "overlap": "overlap", "merge": "merge", "memory_budget": "memory_budget_mb",
    "batch": "batch", "image_instances": "image_instances", "queue_delay_us": "queue_delay_us",
    "backend": "backend", "threads": "threads", "precision": "precision",
}  # fmt: skip


def _model_file(args: argparse.Namespace) -> str:
    """The engine or .onnx to serve; with --images a name or checkpoint too (its dynamic graph,
    exported once into the cache in the form the tile model's runner runs fastest)."""
    from lbnet_deploy.loaders import ModelSpec, OnnxFromSpec
    from lbnet_deploy.runtime.registry import get_backend

    spec = ModelSpec(args.model)
    if spec.is_file:
        if args.precision:
            raise LBNetError(
                f"{args.model} has its own precision: --precision is for names and .pt"
            )
        return args.model
    if not args.images:
        raise LBNetError(f"{args.model}: give an engine or an .onnx file (names and .pt: --images)")
    form = get_backend(args.backend or "ort").form()
    return str(OnnxFromSpec(spec, precision=args.precision or "fp32", form=form)())


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lbnet_deploy.export.triton import (
        ImageSettings,
        model_io,
        write_image_repository,
        write_repository,
    )
    from lbnet_deploy.runtime.triton_client import served_name

    given = {k: v for k, v in vars(args).items() if k in IMAGE_OPTIONS and v is not None}
    if given and not args.images:
        options = ", ".join("--" + k.replace("_", "-") for k in given)
        raise LBNetError(f"{options}: for --images repositories only")
    if min(given.get("overlap", 0), given.get("queue_delay_us", 0)) < 0:
        raise LBNetError("--overlap and --queue-delay-us must be at least 0")
    if not Path(args.repository).is_dir():  # before a first-use export
        raise LBNetError(f"model repository folder does not exist: {args.repository}")
    model = _model_file(args)
    io = model_io(Path(model))
    if args.cpu and io.platform == "tensorrt_plan":  # Triton would refuse to load it
        raise LBNetError("a TensorRT engine runs on GPUs only: drop --cpu, or serve the .onnx")
    facts = io.lbnet
    name = args.name or served_name(
        facts.get("variant", "lbnet"), int(facts["scale"]), facts.get("precision", "fp32")
    )
    kind = "KIND_CPU" if args.cpu else "KIND_GPU"
    counts = {"version": args.version, "max_batch": args.max_batch, "instances": args.instances}
    if args.images:
        given.pop("precision", None)
        settings = ImageSettings(**{IMAGE_OPTIONS[k]: v for k, v in given.items()})
        image, tiles = write_image_repository(
            model, io, args.repository, name, settings, python_tile=args.cpu, kind=kind, **counts
        )
        how = f"our {settings.backend} runner in Python" if args.cpu else io.platform
        print(f"wrote Triton image model {image} and tile model {tiles} ({how})")
    else:
        target = write_repository(model, io, args.repository, name, kind=kind, **counts)
        print(f"wrote Triton model {target} ({io.platform}, version {args.version})")
    if io.platform == "tensorrt_plan":
        engine = io.engine
        assert engine is not None
        print(
            f"  the plan runs only in a Triton container with TensorRT {engine.tensorrt} on GPUs "
            f"of compute capability {engine.compute_capability} ({engine.gpu})"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="Triton Inference Server model folder for an engine or .onnx")
    p.add_argument(
        "model", help="engine (.plan/.engine/.trt, with its sidecar) or .onnx; with --images "
        "also a model name or checkpoint (its dynamic graph)",
    )  # fmt: skip
    p.add_argument("--repository", required=True, help="Triton model repository folder")
    p.add_argument("--name", help="model name (default e.g. lbnet_t_x4_fp16)")
    p.add_argument("--version", type=int, default=1, help="version folder (default 1)")
    p.add_argument(
        "--max-batch", type=int, default=8, help="for dynamic-batch graphs only (default 8)"
    )
    p.add_argument("--instances", type=int, default=1, help="instance_group count (default 1)")
    p.add_argument(
        "--cpu", action="store_true", help="KIND_CPU (ONNX on CPU) instead of GPU; with --images "
        "the tile model is our runner in Triton's Python backend (what `serve --triton` runs)",
    )  # fmt: skip
    p.add_argument(
        "--images", action="store_true", help="serve whole images: an image model (uint8 "
        "HxWx3 in and out) that tiles and merges as `upscale` does, over a tile model",
    )  # fmt: skip
    p.set_defaults(func=run)
    g = p.add_argument_group("--images repositories (defaults: export/triton.py ImageSettings)")
    g.add_argument(
        "--tile", type=positive_int, help="LR tile (default: whole image if it fits the "
        "budget, else 96; a request may set its own)",
    )  # fmt: skip
    g.add_argument("--overlap", type=int, help="tile overlap in LR pixels (16)")
    g.add_argument("--merge", choices=("feather", "crop"), help="(feather)")
    g.add_argument(
        "--memory-budget", type=positive_int, metavar="MB",
        help="per image, as upscale's (2048)",
    )  # fmt: skip
    g.add_argument(
        "--batch", type=positive_int, help="tiles per tile-model request (1; at most --max-batch)"
    )
    g.add_argument(
        "--image-instances", type=positive_int,
        help="images served at once (4; each a process)",
    )  # fmt: skip
    g.add_argument(
        "--queue-delay-us", type=int, help="how long the tile model waits "
        "to batch tiles of concurrent images (2000)",
    )  # fmt: skip
    g.add_argument(
        "--backend", choices=TILE_RUNNERS,
        help="the runner of a --cpu tile model (ort)",
    )  # fmt: skip
    g.add_argument("--threads", type=positive_int, help="CPU threads of a --cpu tile model (all)")
    g.add_argument("--precision", choices=("fp32", "fp16"), help="graph of a model name or .pt")
