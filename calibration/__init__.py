"""lbnet_deploy.calibration: INT8 from an FP32 export and photos. Modules: `data` (deterministic
LR crops), `quantize` (Q/DQ placement and block sensitivity on onnxruntime.quantization),
`session` (scoring candidates), `run` (`calibrate_file`), `trt_cache` (TensorRT 10.x cache)."""

__all__ = ["data", "quantize", "run", "session", "trt_cache"]
