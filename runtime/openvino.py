"""OpenVINO backend: our ONNX graphs (FP32, FP16, Q/DQ INT8) on OpenVINO's CPU, GPU or NPU
plugin, read directly (no conversion step, no file beside the graph).

A dynamic graph is compiled once with its dynamic dims, and a shape that runs twice in a row
(tiles, frames of one size) is reshaped to and compiled for: a static shape ran 20-25% faster
than the dynamic compile (LBNet-T x4, 96x96: 739 vs 926 ms on a 2-core AVX2 EPYC; 558 vs 693 ms
flat form, 2-core AMX Xeon), but a compile costs 0.5-1.2 s, more than one run of a whole image
at a size never seen again. Only the last two static shapes stay compiled (a tile batch and the
shorter last batch), and a new shape's run gives its working memory back (see `_run`): whole
images of many sizes must not accumulate memory (the lesson of ONNX Runtime's arena).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from lbnet_deploy.errors import LBNetError, first_line
from lbnet_deploy.metadata import from_metadata

from .backend import GraphRunner, describe_facts, graph_facts
from .onnxrt import bounded_threads

COMPILED_SHAPES = 2
DEVICES = {"openvino": "CPU", "openvino-gpu": "GPU", "openvino-npu": "NPU"}  # registry names
# our precision names -> OpenVINO's INFERENCE_PRECISION_HINT. Always set: on CPUs with
# AVX512-BF16 or AMX, OpenVINO's CPU plugin computes in BF16 unless told f32, which would
# silently give "fp32" runs BF16 accuracy.
# "bf16-attn" computes in f32 but for the Transformer's matrix products, which
# `attention_in_bf16` and `linear_in_bf16` mark (the name predates the linear layers).
HINTS = {"fp32": "f32", "bf16": "bf16", "bf16-attn": "f32"}
# what bf16-attn computes in BF16, as bench records it beside its timings (until 2026-12-04:
# "the attention products" alone)
BF16_ATTN_COVERS = "the Transformer's matrix products (attention, linear layers)"


def core() -> Any:
    import openvino as ov

    return ov.Core()


def check_device(ov_core: Any, device: str, compute: str = "fp32") -> None:
    """One line where OpenVINO has no such device, or where the device cannot compute `compute`."""
    have = list(ov_core.available_devices)
    if not any(d == device or d.startswith(device + ".") for d in have):
        raise LBNetError(f"OpenVINO has no {device} device here (it lists {', '.join(have)})")
    if compute != "fp32":  # both BF16 computes
        caps = list(ov_core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        if "BF16" not in caps:
            raise LBNetError(
                f"this {device} cannot compute in BF16 (OpenVINO lists {', '.join(caps)}; "
                "BF16 needs AVX512-BF16 or AMX): use --precision fp32"
            )


def attention_in_bf16(model: Any) -> int:
    """Convert q, k and v of every MatMul -> (Add mask) -> Softmax -> MatMul chain to BF16 and
    its result back to f32, in place; returns how many chains.

    With the f32 hint, the CPU plugin then runs each chain as one BF16 MHA kernel (its Snippets
    Subgraph, brgemm in BF16) and everything else in FP32. Written by hand: OpenVINO offers
    precision per node only through the model's own Converts. The converts go outside the
    Transposes next to the MatMuls (the flat forms), so the kernel keeps fusing those.
    Measured on LBNet-T x4 128x128, AMX Xeon: the attention kernels take ~0.56x their FP32
    time; the output differs from FP32 by at most 0.17 of 255 (whole BF16: 3.7).
    """
    import openvino.opset13 as ops

    def sole_user(node: Any) -> str | None:
        """The name of the one node reading `node`'s output, if one only."""
        users = list(node.output(0).get_target_inputs())
        return users[0].get_node().get_name() if len(users) == 1 else None

    def outside(node: Any, i: int) -> tuple[Any, int]:
        # before a Transpose that feeds this MatMul only: other readers keep their f32
        source = node.input_value(i).get_node()
        if source.get_type_name() == "Transpose" and sole_user(source) == node.get_name():
            return source, 0
        return node, i

    chains = 0
    for softmax in [n for n in model.get_ordered_ops() if n.get_type_name() == "Softmax"]:
        scores, mask = softmax.input_value(0).get_node(), None
        if scores.get_type_name() == "Add":  # the dynamic graph's key mask (0 or -inf)
            mask, scores = scores, scores.input_value(0).get_node()
        users = list(softmax.output(0).get_target_inputs())
        chain = [scores, *([mask] if mask else []), softmax]
        if (
            scores.get_type_name() != "MatMul"
            or [(u.get_node().get_type_name(), u.get_index()) for u in users] != [("MatMul", 0)]
            # every step read by the next one only, or f32 readers would get BF16
            or any(sole_user(a) != b.get_name() for a, b in pairwise(chain))
        ):
            continue
        product = users[0].get_node()
        converted = [outside(scores, 0), outside(scores, 1), outside(product, 1)]
        for node, i in converted + ([(mask, 1)] if mask else []):
            convert = ops.convert(node.input_value(i), "bf16")
            node.input(i).replace_source_output(convert.output(0))
        last = product
        consumers = list(product.output(0).get_target_inputs())
        if len(consumers) == 1 and consumers[0].get_node().get_type_name() == "Transpose":
            last = consumers[0].get_node()
            consumers = list(last.output(0).get_target_inputs())
        back = ops.convert(last.output(0), "f32")
        for consumer in consumers:
            consumer.replace_source_output(back.output(0))
        chains += 1
    model.validate_nodes_and_infer_types()
    return chains


def linear_in_bf16(model: Any) -> int:
    """Convert both inputs of every f32 MatMul by a constant weight, on either side (LBNet's
    linear layers: the Transformer's q, k, v and output projections and its MLP; the batched
    form computes its keys as `W @ u^T`), to BF16 and its result back to f32, in place; returns
    how many. The CPU plugin runs each as a BF16 FullyConnected.

    Measured on LBNet-T x4 128x128, 2-core AVX512-BF16 EPYC (RESULTS.md): 1.69-1.72x OpenVINO
    FP32 in one interleaved run each, against 1.43x with the attention alone in BF16; Set5 and
    Set14 PSNR of all five checkpoints within 0.003 dB of FP32 (PRECISION.md), where whole BF16
    loses up to 0.06 dB.
    """
    import openvino.opset13 as ops

    def constants(node: Any) -> int:
        return sum(v.get_node().get_type_name() == "Constant" for v in node.input_values())

    linears = [
        n
        for n in model.get_ordered_ops()
        if n.get_type_name() == "MatMul"
        and constants(n) == 1
        and n.get_output_element_type(0).get_type_name() == "f32"
    ]
    for node in linears:
        readers = list(node.output(0).get_target_inputs())
        for i in (0, 1):
            convert = ops.convert(node.input_value(i), "bf16")
            node.input(i).replace_source_output(convert.output(0))
        back = ops.convert(node.output(0), "f32")
        for reader in readers:
            reader.replace_source_output(back.output(0))
    model.validate_nodes_and_infer_types()
    return len(linears)


def set_compute(model: Any, compute: str, path: str | Path) -> None:
    """What `compute` changes in an FP32 model before it is compiled (the hint aside):
    bf16-attn marks the Transformer's products (`attention_in_bf16`, `linear_in_bf16`), and
    needs an attention to mark."""
    if compute != "bf16-attn":
        return
    try:
        chains = attention_in_bf16(model)
        if chains:
            linear_in_bf16(model)
    except RuntimeError as exc:  # OpenVINO's type check of a graph not shaped like ours
        first = first_line(exc)
        raise LBNetError(f"{path}: cannot compute its Transformer in BF16 ({first})") from None
    if not chains:
        raise LBNetError(f"{path}: no attention found to compute in BF16")


def compile_config(device: str, threads: int | None, compute: str) -> dict[str, object]:
    """The one set of compile properties of the product's OpenVINO models."""
    config = {
        "INFERENCE_NUM_THREADS": bounded_threads(threads) if device == "CPU" else None,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": HINTS[compute],
    }
    return {k: v for k, v in config.items() if v is not None}


class OpenVINORunner(GraphRunner):
    """Runner over an lbnet-deploy ONNX file on an OpenVINO device; facts from its metadata."""

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        threads: int | None = None,
        compute: str = "fp32",
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise LBNetError(f"model file not found: {self.path}")
        if compute not in HINTS:
            raise LBNetError(f"OpenVINO computes in {' or '.join(HINTS)}, not {compute}")
        self.device, self.compute = device, compute
        self._core = core()
        check_device(self._core, device)
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as exc:  # a file OpenVINO's ONNX frontend cannot read, whatever why
            first = first_line(exc)
            raise LBNetError(
                f"{self.path} is not a readable ONNX model ({type(exc).__name__}: {first})"
            ) from None
        if len(self._model.inputs) != 1 or len(self._model.outputs) != 1:
            raise LBNetError(f"{self.path}: not one input and one output, not an LBNet graph")
        shape = self._model.input(0).get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        facts = graph_facts(self._metadata(), dims, str(self.path))
        if compute != "fp32":
            if facts.precision != "fp32":  # BF16 compute is a precision of FP32 graphs only
                raise LBNetError(
                    f"{self.path} is a {facts.precision} graph: --precision {compute} computes "
                    "an FP32 graph in it"
                )
            check_device(self._core, device, compute)
            set_compute(self._model, compute, self.path)
        # what this runner computes in: a bf16 run of an FP32 graph is a bf16 run
        self.facts = facts if compute == "fp32" else replace(facts, precision=compute)
        self._config = compile_config(device, threads, compute)
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._last: tuple[int, ...] | None = None
        # one infer request per shape, a model reshaped in place: one batch at a time
        self._lock = threading.Lock()
        self._dynamic: Any = None  # the graph compiled with its dynamic dims: a new shape's run
        if facts.input_size and facts.batch:  # a fixed graph: compiled now, not in the first run
            self._request((facts.batch, 3, *facts.input_size))
        else:
            try:
                self._dynamic = self._compile(None)
            except LBNetError:  # a plugin without dynamic shapes (NPU): compiled per shape
                self._dynamic = None

    def _compile(self, shape: tuple[int, ...] | None) -> Any:
        """An infer request of the model compiled for `shape` (None: its own dynamic dims)."""
        try:
            if shape is not None:
                self._model.reshape(list(shape))  # its one input
            compiled = self._core.compile_model(self._model, self.device, self._config)
        except Exception as exc:  # a plugin's refusal or a failed allocation, whatever why
            first = first_line(exc, 160)
            what = "its dynamic shape" if shape is None else str(list(shape))
            raise LBNetError(
                f"OpenVINO could not compile {self.path.name} for {what} on {self.device} "
                f"({type(exc).__name__}: {first})"
            ) from None
        return compiled.create_infer_request()

    def _metadata(self) -> dict[str, str]:
        # the ONNX frontend keeps the graph's metadata_props under rt_info["framework"]
        info = self._model.get_rt_info()
        if "framework" not in info:
            return {}
        framework = info["framework"]
        return from_metadata({str(k): framework[k].astype(str) for k in framework})

    def describe(self) -> dict[str, object]:
        import openvino as ov

        return describe_facts(
            self.facts, "openvino", path=str(self.path), device=self.device,
            openvino=ov.get_version(), compiled_dynamic=self._dynamic is not None,
            compiled_shapes=self._shapes(),
        )  # fmt: skip

    def _shapes(self) -> list[list[int]]:
        with self._lock:  # a run of another thread may compile or drop one meanwhile
            return [list(s) for s in self._compiled]

    def _request(self, shape: tuple[int, ...]) -> Any:
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        if self._dynamic is not None and shape != self._last:  # once, maybe never again
            return self._dynamic
        while len(self._compiled) >= COMPILED_SHAPES:
            self._compiled.popitem(last=False)  # frees the compiled model and its buffers
        self._compiled[shape] = self._compile(shape)
        return self._compiled[shape]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._run_locked(batch)

    def _run_locked(self, batch: np.ndarray) -> np.ndarray:
        request = self._request(batch.shape)
        request.infer({0: batch})
        # the output tensor is the request's own buffer, overwritten by its next run
        out = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        if batch.shape != self._last:
            # As ArenaGuard does for ONNX Runtime: a run of a new shape (a new whole image, the
            # first tile) gives its working memory back when it ends, and so do the other
            # shapes' compiled models; runs of one shape (tiles) keep it. Measured, LBNet-T x2,
            # whole images 128, 120, 112 px: RSS between images 604/991/825 MB kept, 178/232/
            # 235 MB released, and eval (75% of the memory available, re-read per image) tiled
            # three Set14 images whole ONNX Runtime ran.
            for kept in [*self._compiled.values(), self._dynamic]:
                if kept is not None:
                    kept.get_compiled_model().release_memory()
            self._last = batch.shape
        return out

    def close(self) -> None:
        with self._lock:  # after a run under way
            self._compiled.clear()
            self._dynamic = None
