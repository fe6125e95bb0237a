"""PyTorch LBNet -> TensorRT-parsable FP32 ONNX, checked and self-describing.

The module's rewrites (one-hot conv unfold/fold, batched or masked banded attention with q
pre-scaled, laid out in TensorRT's or a CPU runtime's form) are chosen in `LBNet.set_ops`; this
file only drives torch's exporter and then folds, checks and stamps the graph (the form is the
graph's `lbnet.form`).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from lbnet_deploy._version import __version__
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.metadata import FORMS, IO, IO_KINDS, IO_PEAK, Form, to_metadata
from lbnet_deploy.model.lbnet import LBNet, Ops

from .onnx_io import save_atomic
from .trt_ops import check_trt_parsable, op_histogram

OPSET = 20  # the newest opset TensorRT 10's parser takes
INPUT, OUTPUT = "lr", "sr"


@dataclass(frozen=True)
class ExportOptions:
    """input_size None = dynamic height and width; batch None = dynamic batch."""

    input_size: tuple[int, int] | None = (128, 128)
    batch: int | None = 1
    reference_ops: bool = False  # export the straightforward port instead (for comparisons)
    form: Form = "batched"  # the attention's layout (model.blocks.Form): TensorRT's by default
    # the pixel range of input and output (metadata.IO): the paper's here (the product's cache);
    # `export` and the API write metadata.IO_FOR_TOOLS unless told
    io: IO = "255"

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise LBNetError(f"the attention form is one of {', '.join(FORMS)}, not {self.form!r}")
        if self.io not in IO_KINDS:
            raise LBNetError(f"io is one of {', '.join(IO_KINDS)}, not {self.io!r}")
        if self.batch is not None and self.batch < 1:
            raise LBNetError(f"batch must be at least 1 (or dynamic), got {self.batch}")
        if self.input_size is not None and min(self.input_size) < 1:
            raise LBNetError(f"input size must be at least 1x1, got {self.input_size}")

    @property
    def size_label(self) -> str:
        return "dynamic" if self.input_size is None else "{}x{}".format(*self.input_size)


@dataclass
class ExportReport:
    path: Path
    seconds: float
    file_bytes: int
    onnx_params: int
    ops: dict[str, int]


def _dynamic_shapes(options: ExportOptions) -> dict[str, dict[int, object]] | None:
    dims: dict[int, object] = {}
    if options.batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=1024)
    if options.input_size is None:
        dims[2] = torch.export.Dim("height", min=1, max=16384)
        dims[3] = torch.export.Dim("width", min=1, max=16384)
    return {"img": dims} if dims else None


def _torch_export(model: LBNet, options: ExportOptions, path: Path) -> None:
    h, w = options.input_size or (32, 32)
    # a dynamic batch is traced with 2 images: torch.export fixes any dimension a sample
    # gives as 1 once an op broadcasts over it (its 0/1 specialization)
    sample = torch.rand(options.batch or 2, 3, h, w) * IO_PEAK[options.io]
    # the exporter logs per-op registration chatter and traces warnings users cannot act on
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (sample,), str(path), dynamo=True, opset_version=OPSET,
            input_names=[INPUT], output_names=[OUTPUT],
            dynamic_shapes=_dynamic_shapes(options), optimize=True,
            external_data=False, verbose=False,
        )  # fmt: skip


def finalize(graph: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants (Polygraphy), then full checker and strict shape inference."""
    import onnx_ir
    from onnx_ir.passes.common import DeduplicateHashedInitializersPass, RemoveUnusedNodesPass
    from polygraphy import config as polygraphy_config
    from polygraphy.backend.onnx import fold_constants
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR  # its per-pass chatter is not for our users
    polygraphy_config.AUTOINSTALL_DEPS = False

    graph = fold_constants(
        graph, num_passes=3, error_ok=False, allow_onnxruntime_shape_inference=False
    )
    # Folding gives each of the three applications of a TransBlock its own transposed copy of
    # the MLP weights; merging identical initializers keeps the weights stored once.
    ir_model = onnx_ir.from_proto(graph)
    for ir_pass in (DeduplicateHashedInitializersPass(), RemoveUnusedNodesPass()):
        ir_model = ir_pass(ir_model).model
    graph = onnx_ir.to_proto(ir_model)
    onnx.checker.check_model(graph, full_check=True)
    graph = onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)
    check_trt_parsable(graph)
    return graph


def export_onnx(model: LBNet, path: str | Path, options: ExportOptions) -> ExportReport:
    """Export `model` to `path` and return what was measured about the result."""
    path = Path(path)
    if options.input_size is not None and min(options.input_size) < 1:
        raise LBNetError(f"input size must be at least 1x1, got {options.size_label}")
    desc = model.descriptor
    start = time.perf_counter()
    mode: Ops = "reference" if options.reference_ops else (
        "dynamic" if options.input_size is None else "static"
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, model.using_ops(mode, options.form):
        raw = Path(tmp) / "raw.onnx"
        _torch_export(model.with_io(options.io), options, raw)
        graph = onnx.load(raw)
    if not options.reference_ops:  # the plain port is kept as torch emits it, to compare
        graph = finalize(graph)
    graph.doc_string = f"LBNet {desc.variant} x{desc.scale}, exported by lbnet-deploy"
    meta = to_metadata(
        desc, input_size=options.size_label, batch=options.batch or "dynamic",
        precision="fp32", form="reference" if options.reference_ops else options.form,
        io=options.io, tool="lbnet-deploy", tool_version=__version__,
    )  # fmt: skip
    onnx.helper.set_model_props(graph, meta)
    save_atomic(graph, path)
    seconds = time.perf_counter() - start
    params = sum(int(onnx.numpy_helper.to_array(t).size) for t in graph.graph.initializer)
    return ExportReport(path, seconds, path.stat().st_size, params, dict(op_histogram(graph)))
