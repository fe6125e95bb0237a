"""Argument wiring for `lbnet-deploy bench`; lbnet_deploy/cli.py calls `add_bench_parser(sub)`.

Also runnable alone: `python -m lbnet_deploy.benchmarks.cli --model lbnet-t-x4 ...`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lbnet_deploy.metadata import RUNS
from lbnet_deploy.runtime.null import MAX_DEVICE_MS

from .models import BACKENDS, SCALING_TILED, SCALING_WHOLE

if TYPE_CHECKING:
    from .bench import BenchOptions


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'64x64,128x96' -> ((64, 64), (128, 96)): height x width."""
    out = []
    for item in text.split(","):
        try:
            h, w = (int(v) for v in item.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected HxW[,HxW...], got {text!r}") from None
        if h < 1 or w < 1:
            raise argparse.ArgumentTypeError(f"sizes must be at least 1x1, got {item!r}")
        out.append((h, w))
    return tuple(out)


def _choices(allowed: Sequence[str]):  # -> a type function for comma-separated lists
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(allowed)} (comma-separated), got {text!r}"
            )
        return items

    return parse


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not 0 <= value <= MAX_DEVICE_MS:  # also NaN
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_DEVICE_MS:.0f} ms, got {text!r}")
    return value


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lbnet-t-x4", help="model name or checkpoint (.pt)")
    p.add_argument(
        "--backend",
        type=_choices((*BACKENDS, "triton")),
        default=("ort",),
        help=f"comma-separated: {', '.join(BACKENDS)}, triton (default ort): the product's "
        "backends on our export, *-plain: the plain export, torch: the reference in eager "
        "PyTorch, torch-ours: our ops eager, null: a stand-in device taking --device-ms per "
        "batch (capacity planning); those a machine lacks are skipped with the reason. "
        "triton: --clients clients sending whole images (--dataset, default Set5) through "
        "Triton against in-process upscale, interleaved (a local server from the "
        "nvidia-pytriton wheel, or --url)",
    )
    p.add_argument(
        "--device-ms",
        type=_milliseconds,
        default=0.0,
        metavar="T",
        help="what the null backend's stand-in device takes per batch (default 0)",
    )
    p.add_argument("--clients", type=int, default=4, help="concurrent clients of triton (4)")
    p.add_argument(
        "--url", help="a running Triton server for triton (gRPC HOST:PORT) serving --model"
    )
    p.add_argument(
        "--served-model", help="its image model (default: --model's name, e.g. lbnet_t_x4_fp32)"
    )
    p.add_argument(
        "--precision",
        type=_choices(RUNS),
        default=("fp32",),
        help="comma-separated fp32, fp16, int8, bf16 (int8: calibrated once with `calibrate`'s "
        "defaults on $LBNET_CALIB_DIR or SunHays80; bf16: OpenVINO on CPUs with BF16)",
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=((64, 64), (128, 128)),
        metavar="HxW,...",
        help="LR sizes for the forward pass (default 64x64,128x128)",
    )
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per configuration (5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (1)")
    p.add_argument("--threads", type=int, help="CPU threads (default: CPUs available)")
    p.add_argument(
        "--recursions",
        type=int,
        default=3,
        help="TransBlock applications per stage, timing only (trained: 3; 0 removes "
        "the transformer)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="untrained weights of the named variant (timing only, e.g. lbnet-x4)",
    )
    p.add_argument(
        "--no-roofline",
        dest="roofline",
        action="store_false",
        help="skip measuring the CPU's MatMul peak",
    )
    p.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="tensorrt: enqueue each batch instead of replaying a CUDA graph (to compare)",
    )
    p.add_argument("--dataset", help="also time end-to-end `upscale` of this folder")
    p.add_argument(
        "--compare",
        action="store_true",
        help="interleaved ours vs plain export vs eager reference, with ORT profiles",
    )
    p.add_argument("--compare-size", type=lambda t: _sizes(t)[0], default=(128, 128), metavar="HxW")
    p.add_argument(
        "--official-repo",
        metavar="DIR",
        help="a checkout of github IVIPLab/LBNet: --compare also times the official code, eager "
        "and plainly exported, and judges the goals against it",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's running-time rows (TM-k) on a Set5 x4 image",
    )
    p.add_argument("--set5", dest="paper_data", default=None, help="Set5 folder for --paper")
    p.add_argument("--paper-image", default="baby", help="Set5 image for --paper (baby: 128x128)")
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="the host pipeline over the null backend: output MP/s at batch 1/4/8 with no "
        "device time, the overlap with a device as slow as the host, PNG writes behind",
    )
    p.add_argument("--scaling", action="store_true", help="latency/memory vs size, whole/tiled")
    p.add_argument("--scaling-whole", type=_ints, default=SCALING_WHOLE)
    p.add_argument("--scaling-tiled", type=_ints, default=SCALING_TILED)
    p.add_argument("--scaling-tile", type=int, default=96, help="tile for the tiled curve (96)")
    p.add_argument(
        "--scaling-max-seconds",
        type=float,
        default=60.0,
        help="skip scaling sizes predicted to take longer per pass (60)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="every study: --compare --paper --scaling --pipeline and --dataset Set5",
    )
    p.add_argument("--note", help="a line printed at the top of the Markdown (e.g. conditions)")
    p.add_argument("--json", help="write the full result as JSON")
    p.add_argument("--plot", help="write the latency/memory figure (PNG)")
    p.add_argument("--markdown", help="write the result as Markdown (e.g. benchmarks/RESULTS.md)")


def cmd_bench(args: argparse.Namespace) -> int:
    from .allocator import pin_malloc_thresholds
    from .bench import BenchOptions, default_set5, run_bench

    pin_malloc_thresholds()  # before any contender allocates: the same for all of them

    opts = BenchOptions(
        model=args.model,
        backends=tuple(b for b in args.backend if b != "triton"),
        precisions=args.precision,
        sizes=args.sizes,
        batch=args.batch,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        recursions=args.recursions,
        random_weights=args.random_weights,
        roofline=args.roofline,
        cuda_graph=args.cuda_graph,
        device_ms=args.device_ms,
        pipeline=args.pipeline or args.all,
        dataset=args.dataset,
        compare=args.compare or args.all,
        compare_size=args.compare_size,
        official_repo=args.official_repo,
        paper=args.paper or args.all,
        scaling=args.scaling or args.all,
        scaling_whole=args.scaling_whole,
        scaling_tiled=args.scaling_tiled,
        scaling_max_seconds=args.scaling_max_seconds,
        scaling_tile=args.scaling_tile,
        paper_image=args.paper_image,
        serving="triton" in args.backend,
        clients=args.clients,
        url=args.url,
        served=args.served_model,
    )
    if args.paper_data:
        opts.paper_data = args.paper_data
    if args.all and not opts.dataset:
        opts.dataset = default_set5()
    _check_before_timing(opts, args.plot)
    result = run_bench(opts)
    if args.note:
        result["note"] = args.note
    write_outputs(result, args.json, args.plot, args.markdown)
    for row in result["forward"]:
        st = row["stats"]
        print(
            f"{row['backend']:>16} {row['precision']} {row['size'][0]}x{row['size'][1]}: "
            f"median {st['median_s'] * 1e3:.1f} ms (p90 {st['p90_s'] * 1e3:.1f}), "
            f"{row['throughput_mpix_s']:.3f} MP/s, peak RSS {row['peak_rss_mb']:.0f} MB"
        )
    t = result.get("triton")
    if t:
        lat = t["triton_latency"] or {}
        print(
            f"{'triton':>16} {t['clients']} clients: {t['triton_images_per_s']:.2f} images/s, "
            f"in-process {t['inprocess_images_per_s']:.2f} ({t['ratio_median']:.2f}x, goal "
            f"{t['goal']}x), p50 {lat.get('median_s', 0):.2f} s, p99 {lat.get('p99_s', 0):.2f} s"
        )
    for s in result["skipped"]:
        print(f"skipped {s['config']}: {s['reason']}")
    return 0


def _check_before_timing(opts: BenchOptions, plot: str | None) -> None:
    """Bad options fail in a second, not after minutes of timing."""
    from lbnet_deploy.errors import LBNetError

    from .plot import FORMATS

    if opts.runs < 1 or opts.warmup < 0 or opts.batch < 1:
        raise LBNetError("--runs and --batch must be >= 1, --warmup >= 0")
    if opts.clients < 1:
        raise LBNetError("--clients must be >= 1")
    if (opts.url or opts.served) and not opts.serving:
        raise LBNetError("--url and --served-model are for --backend triton")
    if opts.url and not opts.served:
        from lbnet_deploy.loaders import served_model

        opts.served = served_model(opts.model, None)
    if plot and Path(plot).suffix.lower() not in FORMATS:
        raise LBNetError(f"--plot {plot}: give a file name ending in {', '.join(FORMATS)}")
    from .bench import default_set5

    # what the end-to-end and the Triton studies upscale: the same checks as `upscale`
    folders = [opts.dataset] if opts.dataset else []
    if opts.serving and not opts.dataset:
        folders.append(default_set5())
    for folder in folders:
        from lbnet_deploy.runtime.files import expand_inputs

        from .measure import upscale_folder

        try:
            expand_inputs([str(upscale_folder(folder))])
        except LBNetError as exc:
            raise LBNetError(f"--dataset: {exc}") from None
    if opts.official_repo:
        from .official import check_official_repo

        check_official_repo(opts.official_repo)


def write_outputs(
    result: dict, json_path: str | None, plot_path: str | None, md_path: str | None
) -> None:
    """JSON, PNG and Markdown, each written whole (temporary file, then rename)."""
    from lbnet_deploy.runtime.atomic import write_json_atomic, write_text_atomic

    for path in (json_path, plot_path, md_path):
        if path:
            Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
    if json_path:
        write_json_atomic(json_path, result)
    if plot_path:
        from .plot import plot_results

        plot_results(result, plot_path)
    if md_path:
        from .markdown import render

        plot = None
        if plot_path:  # link the figure relative to the Markdown file
            plot = os.path.relpath(Path(plot_path).resolve(), Path(md_path).resolve().parent)
        write_text_atomic(md_path, render(result, plot))


def add_bench_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `bench` on lbnet-deploy's sub-command parsers (sets `func`)."""
    p = sub.add_parser(
        "bench",
        help="time the forward pass and more (see --help)",
        description="Time LBNet's forward pass per backend and precision (median, p90, p99 "
        "after warm-up, throughput, peak memory), and optionally end-to-end upscale, the "
        "paper's running times, the scaling curve and a comparison with the official code.",
    )
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from lbnet_deploy.errors import LBNetError
    from lbnet_deploy.logs import configure_logging

    configure_logging()  # run alone, the library's messages reach stderr as under lbnet-deploy
    parser = argparse.ArgumentParser(prog="lbnet-deploy bench")
    add_bench_arguments(parser)
    try:
        return cmd_bench(parser.parse_args(argv))
    except LBNetError as exc:
        print(f"lbnet-deploy: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
