"""lbnet_deploy.export: files made from a model. Modules (imported one by one: `onnx_export`
needs torch, the others onnx only): `onnx_export` (checkpoint -> ONNX), `onnx_io` (read, write,
inspect, `info`), `fp16`, `trt_ops` (TensorRT's ONNX parser's operator list), `engine_build`
(TensorRT engines), `triton` (Triton model folders)."""

__all__ = ["engine_build", "fp16", "onnx_export", "onnx_io", "triton", "trt_ops"]
