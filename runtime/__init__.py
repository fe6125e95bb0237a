"""lbnet_deploy.runtime: the bottom layer. Runners behind one `Runner` protocol, the backend
registry, tiling and the Upscaler, image I/O and whole-or-nothing writes. Needs numpy and pillow;
each backend's library (onnxruntime, TensorRT + CUDA, torch) only when its runner is opened."""

from .backend import Runner, describe_facts
from .images import LoadedImage, read_image, restore, write_image_atomic
from .registry import BACKENDS, Backend, get_backend
from .upscaler import Upscaler

__all__ = [
    "BACKENDS",
    "Backend",
    "LoadedImage",
    "Runner",
    "Upscaler",
    "describe_facts",
    "get_backend",
    "read_image",
    "restore",
    "write_image_atomic",
]
