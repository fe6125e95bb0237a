"""What spandrel's `supports_half` / `supports_bfloat16` should say for LBNet: every official
checkpoint loaded through `spandrel.ModelLoader` (lbnet_deploy.spandrel registered), its module run
in FP32, FP16 and BF16 on the same LR crops of Set5 (PyTorch eager, the device given), and per
precision: Inf/NaN, the max abs difference to FP32 on 0..255 and the PSNR-Y drop against HR
(paper protocol on the crop: SR rounded to uint8, Y, s pixels shaved).

    python benchmarks/studies/spandrel_precision.py [--device cuda] [--crop 48] [--json out.json]

Needs spandrel importable (README, spandrel); a checkout's ../shared for the weights and Set5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from checkout import SHARED, SHARED_DATA
from PIL import Image

import lbnet_deploy.spandrel  # noqa: F401  (registers LBNet with spandrel)
from lbnet_deploy.benchmarks.machine import cpu_model
from lbnet_deploy.quality.metrics import psnr_y

CHECKPOINTS = ("LBNet-T_X4.pt", "LBNet-T_X3.pt", "LBNet-T_X2.pt", "LBNet-X3.pt", "LBNet-X2.pt")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def crops(scale: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) centre crops of Set5's LR files and their HR images."""
    pairs = []
    for hr_path in sorted((SHARED_DATA / "Set5" / "HR").glob("*.png")):
        lr_path = SHARED_DATA / "Set5" / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        lr = np.asarray(Image.open(lr_path).convert("RGB"))
        hr = np.asarray(Image.open(hr_path).convert("RGB"))
        top, left = (lr.shape[0] - size) // 2, (lr.shape[1] - size) // 2
        pairs.append(
            (
                lr[top : top + size, left : left + size],
                hr[scale * top : scale * (top + size), scale * left : scale * (left + size)],
            )
        )
    return pairs


def run(model: torch.nn.Module, lr: np.ndarray, dtype: torch.dtype, device: str) -> np.ndarray:
    """The module as spandrel calls it (0..1 in and out), back on 0..255 float."""
    x = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255).to(device, dtype)
    with torch.inference_mode():
        y = model(x * 255) / 255  # lbnet_deploy.spandrel's call_fn, without spandrel's clamp
    return y.float().cpu().numpy()[0].transpose(1, 2, 0) * 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--json")
    args = parser.parse_args()
    import spandrel

    rows = []
    for name in CHECKPOINTS:
        desc = spandrel.ModelLoader().load_from_file(SHARED / "weights" / name)
        assert desc.architecture.id == "LBNet", desc.architecture.id
        pairs = crops(desc.scale, args.crop)
        ref = [
            run(desc.model.float().to(args.device), lr, torch.float32, args.device)
            for lr, _ in pairs
        ]
        base = np.mean(
            [psnr_y(_u8(r), hr, desc.scale) for r, (_, hr) in zip(ref, pairs, strict=True)]
        )
        for label, dtype in DTYPES.items():
            model = desc.model.to(args.device, dtype)
            outs = [run(model, lr, dtype, args.device) for lr, _ in pairs]
            finite = all(np.isfinite(o).all() for o in outs)
            psnr = np.mean(
                [psnr_y(_u8(o), hr, desc.scale) for o, (_, hr) in zip(outs, pairs, strict=True)]
            )
            worst = max(np.abs(o - r).max() for o, r in zip(outs, ref, strict=True))
            row = {
                "model": name, "precision": label, "finite": finite,
                "max_abs_vs_fp32": float(worst), "psnr_y_fp32": float(base),
                "psnr_y_drop": float(base - psnr),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        meta = {"device": args.device, "torch": torch.__version__, "cpu": cpu_model(),
                "crop": args.crop, "images": "Set5 LR centre crops"}  # fmt: skip
        Path(args.json).write_text(json.dumps({"machine": meta, "rows": rows}, indent=2) + "\n")


def _u8(sr: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(sr), 0, 255).astype(np.uint8)


if __name__ == "__main__":
    main()
