"""lbnet-deploy: ONNX / TensorRT deployment toolkit for LBNet super-resolution.

The package root is the Python API (`lbnet_deploy.api`): load a checkpoint, export, calibrate,
build an engine, open a runner on any backend, upscale an array or files, evaluate on a dataset.
Importing it pulls in nothing heavy: torch, onnx and onnxruntime load inside the calls that
need them. ARCHITECTURE.md maps the sub-packages.
"""

from lbnet_deploy._version import __version__
from lbnet_deploy.api import (
    build_engine,
    calibrate,
    evaluate_dataset,
    export_onnx,
    load_checkpoint,
    open_runner,
    upscale,
    upscale_file,
)
from lbnet_deploy.descriptor import ModelDescriptor
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import ModelFacts

__all__ = [
    "LBNetError",
    "ModelDescriptor",
    "ModelFacts",
    "__version__",
    "build_engine",
    "calibrate",
    "evaluate_dataset",
    "export_onnx",
    "load_checkpoint",
    "open_runner",
    "upscale",
    "upscale_file",
]
