"""lbnet-deploy: ONNX / TensorRT deployment toolkit for LBNet super-resolution.

Importing this package pulls in numpy at most: torch is needed only by `lbnet_deploy.model`
and `lbnet_deploy.export`.
"""

__version__ = "0.2.0"
