"""The paper's published numbers (LBNet, IJCAI 2022; LBNET.md), as data for comparisons."""

from __future__ import annotations

DATASETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")

# (variant, scale) -> PSNR/SSIM per dataset, in DATASETS order
_TABLE: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {
    ("LBNet-T", 2): ((37.95, 0.9602), (33.53, 0.9168), (32.07, 0.8983), (31.91, 0.9253), (38.59, 0.9768)),  # noqa: E501
    ("LBNet", 2): ((38.05, 0.9607), (33.65, 0.9177), (32.16, 0.8994), (32.30, 0.9291), (38.88, 0.9775)),  # noqa: E501
    ("LBNet-T", 3): ((34.33, 0.9264), (30.25, 0.8402), (29.05, 0.8042), (28.06, 0.8485), (33.48, 0.9433)),  # noqa: E501
    ("LBNet", 3): ((34.47, 0.9277), (30.38, 0.8417), (29.13, 0.8061), (28.42, 0.8559), (33.82, 0.9460)),  # noqa: E501
    ("LBNet-T", 4): ((32.08, 0.8933), (28.54, 0.7802), (27.54, 0.7358), (26.00, 0.7819), (30.37, 0.9059)),  # noqa: E501
    ("LBNet", 4): ((32.29, 0.8960), (28.68, 0.7832), (27.62, 0.7382), (26.27, 0.7906), (30.76, 0.9111)),  # noqa: E501
}  # fmt: skip
# The paper's Bicubic row is quoted only for Set5 x4 in our sources.
_BICUBIC = {("Set5", 4): (28.42, 0.8104)}

# the paper's x4 running times in seconds per image (GPU not stated), for benchmarks
RUNNING_TIME_X4 = {
    "without transformer": 0.0168,
    "TM-0": 0.0274,
    "TM-1": 0.0356,
    "TM-2 (released)": 0.0401,
    "TM-3": 0.0516,
}


def paper_scores(variant: str, scale: int, dataset: str) -> tuple[float, float] | None:
    """(PSNR, SSIM) the paper reports, or None when it reports none for this combination."""
    if variant == "bicubic":
        return _BICUBIC.get((dataset, scale))
    row = _TABLE.get((variant, scale))
    if row is None or dataset not in DATASETS:
        return None
    return row[DATASETS.index(dataset)]
