"""`lbnet-deploy eval`: PSNR/SSIM of any model and backend with the paper's protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lbnet_deploy.errors import LBNetError

from .options import add_runtime_options, split_precision
from .upscale import upscaler_for

if TYPE_CHECKING:
    from lbnet_deploy.runtime.upscaler import Upscaler


def run(args: argparse.Namespace) -> int:
    from lbnet_deploy.evaluate import (
        Compare,
        evaluate,
        find_hr_images,
        load_samples,
        table,
        write_json,
    )
    from lbnet_deploy.runtime.atomic import check_name_fits
    from lbnet_deploy.runtime.files import (
        check_output_dir,
        prepare_output_dir,
        refuse_inputs_as_outputs,
        refuse_shared_stems,
    )

    dataset = Path(args.dataset)
    hr_paths = find_hr_images(dataset)
    # before minutes of work: where the report and the SR images go, and that no SR image
    # would replace one of the dataset's own files
    refuse_shared_stems(hr_paths)  # HR/a.png and HR/a.bmp: one name for scores, LR, SR
    lr_dir = dataset / "LR_bicubic"
    lr_files = [p for p in lr_dir.rglob("*") if p.is_file()] if lr_dir.is_dir() else []
    shown = [split_precision(m) for m in args.compare_model]
    if shown and not args.compare:
        raise LBNetError("--compare-model adds panels to --compare DIR: give that too")
    for i, text in enumerate(args.compare_model):  # one score per label in compare_psnr_y
        if text in args.compare_model[:i]:
            raise LBNetError(f"--compare-model {text} is given twice")
    specs = [args.model, args.baseline, *(spec for spec, _ in shown)]
    models = [Path(m) for m in specs if m and Path(m).exists()]
    folders = {"save_sr": args.save_sr, "compare": args.compare}
    for option, folder in folders.items():  # beside HR/a.bmp, a.png would make a second image
        if folder and Path(folder).resolve().is_relative_to(dataset.resolve()):
            raise LBNetError(
                f"--{option.replace('_', '-')} {folder} is inside the dataset {dataset}: its "
                "images would join the dataset's; choose a folder outside it"
            )
    written = {
        k: [Path(v) / f"{p.stem}.png" for p in hr_paths] if v else [] for k, v in folders.items()
    }
    json_path = [Path(args.json)] if args.json else []
    for out in json_path + [Path(v) / "x" for v in folders.values() if v]:
        check_output_dir(out.absolute().parent)
    for out in json_path + written["save_sr"] + written["compare"]:
        check_name_fits(out)
    # no output replaces a dataset file, a model or another output (--save-sr and --compare
    # into one folder would both write <name>.png)
    refuse_inputs_as_outputs(
        json_path + written["save_sr"] + written["compare"], hr_paths + lr_files + models
    )

    model = (
        f"bicubic-x{args.scale}" if args.model.startswith("bicubic") and args.scale else args.model
    )
    # memory budget None: scores are compared with whole-image results (the paper, the official
    # code), so every image runs whole that this machine can hold (75% of available memory,
    # re-read per image)
    upscaler, where = upscaler_for(args, model, args.precision)

    def beside(option: str, text: str, spec: str, precision: str | None = None) -> Upscaler:
        """A model scored beside --model: of its scale, refused before any work if not."""
        other = upscaler_for(args, spec, precision)[0]
        if other.runner.scale != upscaler.runner.scale:
            raise LBNetError(
                f"{option} {text} is a x{other.runner.scale} model, but --model {model} is "
                f"x{upscaler.runner.scale}"
            )
        return other

    baseline = beside("--baseline", args.baseline, args.baseline) if args.baseline else None
    compare = None
    if args.compare:
        others = []
        for text, (spec, precision) in zip(args.compare_model, shown, strict=True):
            others.append((text, beside("--compare-model", text, spec, precision)))
        label = f"{model}@{args.precision}" if args.precision else model
        compare = Compare(Path(args.compare), label, args.baseline, tuple(others))
    failed: list[LBNetError] = []

    def skip(exc: LBNetError) -> None:  # one line per bad image; the others are scored
        print(f"lbnet-deploy: error: {exc}", file=sys.stderr)
        failed.append(exc)

    samples = load_samples(
        dataset, upscaler.runner.scale, lr_from_hr=args.lr_from_hr, on_error=skip,
        max_pixels=upscaler.max_input_pixels(),
    )  # fmt: skip
    if not samples:
        raise LBNetError(f"no image of {dataset} could be read")
    unread = [p.stem for p in hr_paths if p.stem not in {s.name for s in samples}]
    save_sr = prepare_output_dir(args.save_sr) if args.save_sr else None
    if compare is not None:
        prepare_output_dir(compare.folder)
    variant = str(upscaler.runner.describe().get("variant", "?"))
    result = evaluate(
        upscaler, samples, model=model, variant=variant,
        dataset=dataset.resolve().name, ensemble=args.self_ensemble, baseline=baseline,
        baseline_name=args.baseline, save_sr=save_sr, progress=not args.quiet, on_error=skip,
        compare=compare,
    )  # fmt: skip
    result.failed[:0] = unread  # the report names every image its means leave out
    if not result.images:
        raise LBNetError(f"no image of {dataset} could be scored")
    print(table(result))
    print(f"ran on {where}", file=sys.stderr)
    if failed:
        total = len(result.images) + len(failed)
        print(f"scored {len(result.images)} of {total} images", file=sys.stderr)
    if args.json:
        write_json(result, args.json)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM on a dataset with the paper's protocol")
    p.add_argument("--model", required=True, help="name, .pt, .onnx, or bicubic (with --scale)")
    p.add_argument("--dataset", required=True, help="EDSR layout (HR/ + LR_bicubic/) or HR images")
    add_runtime_options(p, budget_mb=None)
    p.add_argument(
        "--lr-from-hr",
        action="store_true",
        help="make LR with our MATLAB bicubic even where LR files exist",
    )
    p.add_argument("--self-ensemble", action="store_true", help="also score the x8 ensemble")
    p.add_argument("--baseline", help="a second model to compare with (e.g. FP32 vs INT8)")
    p.add_argument("--save-sr", help="folder for the SR images (<HR name>.png)")
    p.add_argument(
        "--compare",
        metavar="DIR",
        help="per image, DIR/<HR name>.png: side-by-side crops (bicubic, --model, --baseline, "
        "each --compare-model, HR) where they differ most, with each one's PSNR-Y",
    )
    p.add_argument(
        "--compare-model",
        action="append",
        default=[],
        metavar="MODEL[@PRECISION]",
        help="one more model shown and scored in --compare's crops (repeat it): a name, .pt, "
        ".onnx (an INT8 graph from calibrate) or engine, as --model; @fp16 or @bf16 picks the "
        "precision as --precision does (lbnet-t-x4@fp16)",
    )
    p.add_argument("--json", help="write per-image and mean scores as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-image progress")
    p.set_defaults(func=run)
