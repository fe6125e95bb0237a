"""The benchmark figure: latency and peak memory against LR input size (matplotlib, Agg)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from lbnet_deploy.runtime.atomic import write_bytes_atomic

FORMATS = (".png", ".svg", ".pdf")


def plot_results(result: dict[str, Any], path: str | Path) -> Path:
    """Two log-log panels: median latency (p90 as the bar top) and peak RSS above the start,
    per backend for the forward rows and for the whole/tiled scaling rows when present."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    whole = sorted(
        (r["size"] ** 2, r["macs"])
        for r in result.get("scaling", [])
        if r.get("mode") == "whole" and "macs" in r
    )
    panels = 3 if whole else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2))
    ax_t, ax_m = axes[0], axes[1]
    if whole:
        # where N^2/16 attention overtakes the CNN and the token linear layers
        ax_c = axes[2]
        px = [p for p, _ in whole]
        kinds = {
            "CNN (Conv)": lambda m: m["Conv"],
            "token linear layers": lambda m: m["MatMul_weights"] + m["Gemm"],
            "attention products": lambda m: m["MatMul_attention"],
        }
        for label, pick in kinds.items():
            ax_c.plot(px, [max(pick(m), 1) / 1e9 for _, m in whole], marker="o", label=label)
        ax_c.set(
            xscale="log",
            yscale="log",
            xlabel="LR input pixels (H x W)",
            ylabel="GMACs per forward (whole image)",
            title="MACs by kind",
        )
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    for row in result.get("forward", []):
        h, w = row["size"]
        key = f"{row['backend']} {row['precision']}"
        st = row["stats"]
        series.setdefault(key, []).append((h * w, st["median_s"], st["p90_s"], row["rss_delta_mb"]))
    for row in result.get("scaling", []):
        if "stats" not in row:
            continue
        key = f"scaling: {row['mode']}" + (f" ({row['tile']}px tiles)" if "tile" in row else "")
        st = row["stats"]
        series.setdefault(key, []).append(
            (row["size"] ** 2, st["median_s"], st["p90_s"], row["rss_delta_mb"])
        )
    for key, points in series.items():
        points.sort()
        px = [p[0] for p in points]
        med = [p[1] for p in points]
        err = [max(p[2] - p[1], 0.0) for p in points]
        ax_t.errorbar(px, med, yerr=[[0] * len(err), err], marker="o", capsize=3, label=key)
        ax_m.plot(px, [max(p[3], 0.1) for p in points], marker="o", label=key)
    model = result.get("model", "")
    machine = result.get("machine", {})
    where = f"{machine.get('cpu_model', '?')}, {machine.get('threads_used', '?')} threads"
    ax_t.set(
        xscale="log",
        yscale="log",
        xlabel="LR input pixels (H x W)",
        ylabel="seconds per forward (median, bar to p90)",
        title=f"{model} latency",
    )
    ax_m.set(
        xscale="log",
        yscale="log",
        xlabel="LR input pixels (H x W)",
        ylabel="peak RSS above start (MiB)",
        title=f"peak host memory ({where})",
    )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = io.BytesIO()
    fig.savefig(image, format=path.suffix.lstrip(".").lower(), dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, image.getvalue())  # whole or not at all
    return path
