"""Does `eval` hold its memory across a folder of differently sized photos?

Makes an HR-only dataset of N photos (center crops of SunHays80, each a different size), then
runs `lbnet-deploy eval` on the whole folder and on its largest image alone, each in a fresh
process under `/usr/bin/time -v`, and compares their peak RSS: the folder's must stay within the
largest single image's plus 10% (ONNX Runtime's arena used to add up every shape it saw).

    python benchmarks/studies/eval_memory.py --model lbnet-t-x4 [--images 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from checkout import SHARED_DATA, use_shared_weights
from PIL import Image

from lbnet_deploy.benchmarks.machine import machine_info


def make_dataset(photos: Path, out: Path, count: int, scale: int) -> list[tuple[str, int, int]]:
    """`count` HR crops of distinct sizes (LR from about 96x72 to 200x150 px), largest last."""
    files = sorted(photos.glob("*.jpg"))[:count]
    if len(files) < count:
        raise SystemExit(f"{photos} has {len(files)} photos, {count} needed")
    out.mkdir(parents=True)
    sizes = []
    for i, path in enumerate(files):
        lr_w, lr_h = 96 + (104 * i) // max(count - 1, 1), 72 + (78 * i) // max(count - 1, 1)
        with Image.open(path) as img:
            w, h = lr_w * scale, lr_h * scale
            left, top = (img.width - w) // 2, (img.height - h) // 2
            img.convert("RGB").crop((left, top, left + w, top + h)).save(out / f"{i:02d}.png")
        sizes.append((f"{i:02d}.png", lr_w, lr_h))
    return sizes


def peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory of one `lbnet-deploy` run, in MB (GNU time's maximum RSS)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "lbnet_deploy.cli", *args]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{run.stderr[-2000:]}")
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    assert kb, run.stderr[-500:]
    return int(kb.group(1)) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbnet-t-x4")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--photos", type=Path, default=SHARED_DATA / "SunHays80")
    args = parser.parse_args(argv)
    use_shared_weights()
    scale = int(args.model.rpartition("x")[2])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        sizes = make_dataset(args.photos, folder, args.images, scale)
        largest = Path(tmp) / "largest"
        largest.mkdir()
        (largest / sizes[-1][0]).write_bytes((folder / sizes[-1][0]).read_bytes())
        common = ["eval", "--model", args.model, "--scale", str(scale), "-q"]
        single = peak_rss_mb([*common, "--dataset", str(largest)])
        whole = peak_rss_mb([*common, "--dataset", str(folder)])
    info = machine_info()
    print(f"machine: {info['cpu_model']}, flags {' '.join(info['cpu_flags'])}")  # type: ignore[arg-type]
    print(f"{args.model}, {args.images} photos, LR {sizes[0][1]}x{sizes[0][2]} .. "
          f"{sizes[-1][1]}x{sizes[-1][2]}, each run whole (eval's budget)")  # fmt: skip
    print("| run | peak RSS (MB) |\n|---|---|")
    print(f"| largest image alone | {single:.0f} |\n| whole folder | {whole:.0f} |")
    verdict = "within" if whole <= 1.10 * single else "OVER"
    print(f"folder / largest alone = {whole / single:.3f} ({verdict} the 1.10 bound)")
    return 0 if whole <= 1.10 * single else 1


if __name__ == "__main__":
    sys.exit(main())
