"""lbnet_deploy.model: the PyTorch LBNet (`lbnet.LBNet`, blocks in `blocks`) and checkpoint
loading into a descriptor (`checkpoint.load_model`). Needs torch."""

__all__ = ["blocks", "checkpoint", "lbnet"]
