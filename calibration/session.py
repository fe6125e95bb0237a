"""An ONNX Runtime CPU session over an in-memory graph: the quantizer scores candidate graphs
without writing each to disk (the runtime's OnnxRuntimeRunner opens lbnet-deploy files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


class GraphRunner:
    """One ORT CPU session: LR uint8 RGB -> SR uint8 (rounded and clipped, as scored), on
    0..255 whatever the graph's range (lbnet.io)."""

    def __init__(self, graph: onnx.ModelProto | str | Path, threads: int = 0) -> None:
        from lbnet_deploy.metadata import IO_PEAK, from_metadata, io_kind
        from lbnet_deploy.runtime.onnxrt import ArenaGuard, create_session

        data = graph.SerializeToString() if isinstance(graph, onnx.ModelProto) else Path(graph)
        self.session = create_session(data, threads=threads or None)
        facts = from_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.scale = int(facts.get("scale", "0") or 0)
        self.peak = IO_PEAK[io_kind(facts, str(graph) if isinstance(graph, Path) else "graph")]
        self._arena = ArenaGuard()  # crops and images of many sizes: memory must not pile up

    def raw(self, lr: np.ndarray) -> np.ndarray:
        from lbnet_deploy.runtime.backend import from_range, to_range
        from lbnet_deploy.runtime.onnxrt import run_guarded

        x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None].astype(np.float32))
        x = to_range(x, self.peak)
        if not self.scale:  # a graph without our metadata: ORT allocates the output
            name = self.session.get_inputs()[0].name
            out = self.session.run(None, {name: x}, self._arena.run_options(x.shape))[0][0]
        else:
            out = run_guarded(self.session, self._arena, x, self.scale)[0]
        return from_range(out, self.peak)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        y = self.raw(lr).transpose(1, 2, 0)
        return np.clip(np.round(y), 0, 255).astype(np.uint8)
