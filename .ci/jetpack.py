"""The JetPack-like CI job: an engine made on the host side, served where only the torch-free
install exists (JetPack 6: Python 3.10, numpy 1.26, TensorRT 10.3 from the system, cuda-python).

    python3 .ci/jetpack.py host DIR      # full install: export a graph, build a (fake) engine
    python3.10 .ci/jetpack.py device DIR  # base install only: `upscale` with it, `info` on it
                                          # (and its layers)

TensorRT and the GPU are the recording fakes of tests/fake_tensorrt.py (TensorRT 10.3.0 over
cuda-python); everything else is the real product.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.fake_tensorrt

from tests.fake_tensorrt import FakeTensorRT  # noqa: E402

FAKE = FakeTensorRT(version="10.3.0", cuda="cuda-python")  # JetPack 6's TensorRT


def host(folder: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from lbnet_deploy.cli import main
    from tests.conftest import random_lbnet

    torch.save(random_lbnet("LBNet-T", 4).state_dict(), folder / "t4.pt")
    export = ["export", str(folder / "t4.pt"), "-o", str(folder / "t4.onnx")]
    assert main([*export, "--input-size", "16x16"]) == 0
    sys.modules.update(FAKE.modules())
    assert main(["build", str(folder / "t4.onnx"), "-o", str(folder / "t4.plan")]) == 0
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "photo.png")


def device(folder: Path) -> None:
    import numpy as np

    assert sys.version_info[:2] == (3, 10), sys.version
    assert np.__version__.startswith("1.26"), np.__version__
    for name in ("torch", "onnx", "onnxruntime"):
        sys.modules[name] = None  # type: ignore[assignment]  # absent, as on the board
    sys.modules.update(FAKE.modules())
    from PIL import Image

    from lbnet_deploy.cli import main

    plan, out = str(folder / "t4.plan"), str(folder / "out")
    assert main(["upscale", str(folder / "photo.png"), "-o", out, "--model", plan, "-q"]) == 0
    assert Image.open(folder / "out" / "photo.png").size == (120, 160)
    assert main(["info", plan]) == 0
    assert main(["info", plan, "--layers"]) == 0  # TensorRT's engine inspector, per layer
    assert all(sys.modules[n] is None for n in ("torch", "onnx", "onnxruntime"))
    print("jetpack-like: upscale and info with a TensorRT 10.3 engine, Python 3.10, numpy 1.26")


if __name__ == "__main__":
    {"host": host, "device": device}[sys.argv[1]](Path(sys.argv[2]))
