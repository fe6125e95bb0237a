"""Our PyTorch LBNet reproduces the paper's Set5 table on full images (paper protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lbnet_deploy.model.checkpoint import load_checkpoint
from lbnet_deploy.quality.metrics import mean_scores

from .conftest import CHECKPOINTS, DATA, WEIGHTS, needs_data, needs_weights

pytestmark = [needs_weights, needs_data, pytest.mark.slow]

# LBNET.md, "Paper results", Set5 column
PAPER_SET5 = {
    "LBNet-X2.pt": (38.05, 0.9607),
    "LBNet-X3.pt": (34.47, 0.9277),
    "LBNet-T_X2.pt": (37.95, 0.9602),
    "LBNet-T_X3.pt": (34.33, 0.9264),
    "LBNet-T_X4.pt": (32.08, 0.8933),
}


def upscale_full(model: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(lr.transpose(2, 0, 1).copy())[None].float()
    with torch.no_grad():
        sr = model(x)[0].numpy().transpose(1, 2, 0)
    return np.clip(np.rint(sr), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_set5_matches_paper(ckpt: str) -> None:
    model, desc = load_checkpoint(WEIGHTS / ckpt)
    model.set_ops("reference")  # one run at a time: full x2 images would need ~17 GB batched
    s = desc.scale
    pairs = []
    for hr_path in sorted((DATA / "Set5" / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path).convert("RGB"))
        hr = hr[: hr.shape[0] - hr.shape[0] % s, : hr.shape[1] - hr.shape[1] % s]
        lr_path = DATA / "Set5" / "LR_bicubic" / f"X{s}" / f"{hr_path.stem}x{s}.png"
        pairs.append((upscale_full(model, np.asarray(Image.open(lr_path).convert("RGB"))), hr))
    scores = mean_scores(pairs, shave=s)
    psnr, ssim = PAPER_SET5[ckpt]
    print(f"{ckpt}: Set5 x{s} {scores.psnr:.4f} dB / {scores.ssim:.5f} (paper {psnr} / {ssim})")
    assert abs(scores.psnr - psnr) <= 0.01
    assert abs(scores.ssim - ssim) <= 0.0005
