"""INT8 QDQ graph: symmetric int8 Q/DQ only on the inputs of the INT8 Conv/linear MatMul nodes
(TensorRT's placement), per-channel weights, layers chosen by error per multiply-add, close to
FP32 on a crop; deterministic calibration data; a parsable TensorRT cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from lbnet_deploy.calibration.data import calibration_crops, graphic, graphics_pairs
from lbnet_deploy.calibration.quantize import Quantizer, blocks, layers, quantize_mixed
from lbnet_deploy.calibration.trt_cache import read_cache, trt_version_number, write_cache
from lbnet_deploy.errors import LBNetError

from .conftest import DATA, needs_photos, needs_weights, set5_lr

SIZE = (32, 32)
PHOTOS = DATA / "SunHays80"
# measured on LBNet-T x4, baby x4 LR 32x32 crop, 8 MinMax crops, tail float:
# PSNR(INT8 vs FP32) = 40.3 dB
MIN_PSNR_VS_FP32 = 36.0


@pytest.fixture(scope="module")
def int8(export_cache, tmp_path_factory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    fp32 = onnx.load(export_cache("LBNet-T_X4.pt", SIZE))
    crops = calibration_crops(PHOTOS, 4, SIZE, count=8, progress=False)
    quantizer = Quantizer(fp32, crops, "MinMax", workdir=tmp_path_factory.mktemp("q"))
    return fp32, quantizer.quantize(float_layers=["tail.0"])


@pytest.fixture(scope="module")
def int8_random(export_cache, photo_folder, tmp_path_factory):
    """The same calibration on a random-weight graph and photo-like images: the structure of
    the Q/DQ graph does not depend on the weights."""
    fp32 = onnx.load(export_cache("random-LBNet-T-x4", (16, 16)))
    crops = calibration_crops(photo_folder, 4, (16, 16), count=8, progress=False)
    quantizer = Quantizer(fp32, crops, "MinMax", workdir=tmp_path_factory.mktemp("q"))
    return fp32, quantizer.quantize(float_layers=["tail.0"]), quantizer


def _inits(graph: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in graph.graph.initializer}


def test_qdq_is_symmetric_int8_per_channel(int8_random) -> None:
    _, q, _ = int8_random
    inits = _inits(q)
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    per_channel = 0
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()
        per_channel += inits[node.input[1]].size > 1
    assert per_channel > 100  # every Conv/linear weight has one scale per output channel
    props = {p.key: p.value for p in q.metadata_props}
    assert props["lbnet.precision"] == "int8" and props["lbnet.int8_float_layers"] == "tail.0"
    assert (
        props["lbnet.int8_placement"] == "tensorrt"
        and 0.9 < float(props["lbnet.int8_mac_share"]) < 1.0
    )


def test_qdq_only_on_the_inputs_of_int8_convs_and_linear_layers(int8_random) -> None:
    """TensorRT's placement: every dequantized tensor feeds INT8 Conv/linear MatMul nodes only;
    residual Adds, the dense Concats, LayerNorm, Softmax and the attention products read the
    float tensors the FP32 graph gives them."""
    fp32, q, quantizer = int8_random
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in q.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    int8 = {n for k, ns in quantizer.layers.items() if k != "tail.0" for n in ns}
    dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    for node in dq:
        assert all(c.name in int8 for c in consumers[node.output[0]]), node.name
    source = {n.name: n for n in fp32.graph.node}
    for node in q.graph.node:
        if node.name in source and node.name not in int8:  # float: the FP32 graph's inputs
            assert list(node.input) == list(source[node.name].input), node.name
    made_by = {o: n for n in q.graph.node for o in n.output}
    tail = next(n for n in q.graph.node if "tail.0.weight" in n.input)  # the float layer
    assert all(i not in made_by or made_by[i].op_type != "DequantizeLinear" for i in tail.input)
    for node in q.graph.node:  # every INT8 node reads its activation and weight dequantized
        if node.name in int8:
            made = [next((p for p in q.graph.node if i in p.output), None) for i in node.input[:2]]
            assert all(p is not None and p.op_type == "DequantizeLinear" for p in made)


def test_keys_computed_as_wk_at_u_are_quantized_per_output_channel(int8_random) -> None:
    """The batched form's Wk @ u^T: its weight comes first; its scales are one per row (the
    output channels), not along the reduction axis quantize_static would use."""
    fp32, q, _ = int8_random
    inits = {i.name for i in fp32.graph.initializer}
    first = [n.name for n in fp32.graph.node if n.op_type == "MatMul" and n.input[0] in inits]
    assert len(first) == 6  # one per TransBlock application
    made_by = {o: n for n in q.graph.node for o in n.output}
    qinits = _inits(q)
    for node in (n for n in q.graph.node if n.name in first):
        dq = made_by[node.input[0]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        weight, scale = qinits[dq.input[0]], qinits[dq.input[1]]
        assert axis == 0 and scale.shape == (weight.shape[0],) and weight.dtype == np.int8


def test_layers_and_their_multiply_adds(int8_random) -> None:
    """Each weight is one layer with all its applications; the MAC share counts them."""
    fp32, _, quantizer = int8_random
    found = layers(fp32)
    assert len(found["r1.b1.c1"]) == 2 and len(found["attention.linear0"]) == 3  # recursions
    assert len(found["tokens.unfold"]) == 2 and len(found["head"]) == 1
    assert sorted(n for ns in found.values() for n in ns) == sorted(
        n for ns in blocks(fp32).values() for n in ns
    )
    assert quantizer.mac_share() == 1.0 and quantizer.mac_share(list(found)) == 0.0
    heavy = max(found, key=quantizer.macs.__getitem__)
    assert quantizer.mac_share([heavy]) == pytest.approx(
        1 - quantizer.macs[heavy] / sum(quantizer.macs.values())
    )
    with pytest.raises(LBNetError, match="unknown layers"):
        quantizer.quantize(float_layers=["tail"])


def test_a_dynamic_graph_counts_the_multiply_adds_of_a_fixed_one(export_cache) -> None:
    """Shape inference leaves a dynamic graph's token MatMuls unsized: the layers' MACs at a
    size must still equal the fixed graph's at that size (else they count as free to keep
    float, and the INT8 share is overstated)."""
    from lbnet_deploy.calibration.quantize import layer_macs

    fixed = onnx.load(export_cache("random-LBNet-T-x4", (16, 16)))
    dynamic = onnx.load(export_cache("random-LBNet-T-x4"))
    a = layer_macs(fixed, layers(fixed), (16, 16))
    b = layer_macs(dynamic, layers(dynamic), (16, 16))
    assert a == b and all(v > 0 for v in a.values())
    assert sum(v for k, v in a.items() if ".linear" in k) > 0.2 * sum(a.values())


def test_every_layer_float_is_the_fp32_graph(int8_random) -> None:
    from lbnet_deploy.calibration.session import GraphRunner

    fp32, _, quantizer = int8_random
    none = quantizer.quantize(float_layers=list(quantizer.layers))
    assert not any(n.op_type.endswith("QuantizeLinear") for n in none.graph.node)
    lr = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    assert np.array_equal(GraphRunner(none).raw(lr), GraphRunner(fp32).raw(lr))


def test_the_search_keeps_float_what_costs_most_per_multiply_add(
    int8_random, photo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The selection, on a scorer whose answers are known: each layer adds a set output error
    and a set PSNR drop when INT8. A limit the all-INT8 graph holds ranks nothing; a tighter one
    keeps float the fewest layers, in order of error per multiply-add, that hold it."""
    from lbnet_deploy.calibration import quantize

    _, _, quantizer = int8_random
    names = list(quantizer.layers)
    rng = np.random.default_rng(0)
    error = dict(zip(names, rng.random(len(names)), strict=True))
    cost = {k: 0.001 * error[k] for k in names}  # dB each layer costs INT8

    def int8_layers(graph: onnx.ModelProto) -> list[str]:
        meta = {p.key: p.value for p in graph.metadata_props}
        floats = set(filter(None, meta["lbnet.int8_float_layers"].split(",")))
        return [k for k in names if k not in floats]

    class Known:
        def __init__(self, *args: object) -> None:
            pass

        def error(self, graph: onnx.ModelProto, count: int) -> float:
            (alone,) = int8_layers(graph)
            return error[alone]

        def drop(self, graph: onnx.ModelProto) -> float:
            return sum(cost[k] for k in int8_layers(graph))

    monkeypatch.setattr(quantize, "_Scorer", Known)
    total = sum(cost.values())
    loose = quantize_mixed(quantizer, [], 4, max_psnr_drop=total, progress=False)
    assert loose.float_layers == [] and loose.sensitivity == {} and loose.int8_mac_share == 1
    limit = total / 2
    tight = quantize_mixed(quantizer, [], 4, max_psnr_drop=limit, progress=False)
    assert tight.sensitivity == error and tight.drop <= limit
    order = sorted(names, key=lambda k: -error[k] / max(quantizer.macs[k], 1))
    k = len(tight.float_layers)
    assert sorted(order[:k]) == tight.float_layers  # a prefix of the order ...
    assert sum(cost[n] for n in order[k - 1 :]) > limit  # ... and the shortest that holds
    assert tight.int8_mac_share == quantizer.mac_share(tight.float_layers) < 1


@needs_weights
@needs_photos
def test_int8_close_to_fp32_on_crop(int8) -> None:
    from lbnet_deploy.calibration.session import GraphRunner

    fp32, q = int8
    crop = set5_lr(4, "baby")[:32, :32]
    a, b = GraphRunner(fp32)(crop).astype(float), GraphRunner(q)(crop).astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
    assert psnr > MIN_PSNR_VS_FP32


def test_calibration_cache_roundtrip(int8_random, tmp_path: Path) -> None:
    """The implicit-INT8 cache holds a range for every tensor calibration measured: the input
    and every Conv and linear layer's output (TensorRT runs a layer in INT8 only where all its
    tensors have one; the Q/DQ graph keeps scales for INT8 inputs alone)."""
    fp32, q, quantizer = int8_random
    scales = quantizer.activation_scales()
    assert "lr" in scales and all(s > 0 for s in scales.values())
    outputs = [n.output[0] for n in fp32.graph.node if n.name in quantizer.blocks["r1"]]
    assert outputs and all(o in scales for o in outputs)
    inits = _inits(q)
    in_graph = {
        n.input[0]: float(inits[n.input[1]]) for n in q.graph.node if n.op_type == "QuantizeLinear"
    }
    assert set(in_graph) < set(scales)  # the same scales as the Q/DQ graph, and more
    assert all(scales[k] == pytest.approx(v, rel=1e-6) for k, v in in_graph.items())
    path = tmp_path / "calib.cache"
    write_cache(scales, path, trt_version="10.3.0")
    assert path.read_text().startswith("TRT-100300-EntropyCalibration2\n")
    version, back = read_cache(path)
    assert version == 100300
    assert back == pytest.approx({k: np.float32(v) for k, v in scales.items()}, rel=1e-7)


def test_a_graph_without_the_four_token_convolutions_is_refused() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    w = onnx.numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "r1.weight")
    conv = helper.make_node("Conv", ["x", "r1.weight"], ["y"], name="c")
    graph = helper.make_model(helper.make_graph([conv], "g", [x], [y], [w]))
    with pytest.raises(LBNetError, match="found 0"):
        blocks(graph)


def test_trt_version_number() -> None:
    assert trt_version_number("8.6.1") == 8601
    assert trt_version_number("10.12.0") == 101200


# the blocks of LBNET.md's module table whose name is not their weights' first key
CONV_BLOCK = {"sub_mean": "head", "add_mean": "tail", "se1": "se", "se2": "se", "se3": "se",
              "c2": "attention", "c3": "attention2"}  # fmt: skip


def _descendants(graph: onnx.ModelProto, start: str) -> set[str]:
    """Names of the nodes downstream of node `start` (data flow, not graph order)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_name = {n.name: n for n in graph.graph.node}
    seen: set[str] = set()
    todo = list(by_name[start].output)
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.name not in seen:
                seen.add(node.name)
                todo.extend(node.output)
    return seen


@pytest.mark.parametrize(
    ("ckpt", "size"),
    [("random-LBNet-T-x4", (16, 16)), ("random-LBNet-x2", (37, 29)), ("LBNet-T_X4.pt", SIZE)],
)
def test_each_matmul_and_token_convolution_lands_in_its_stage(
    ckpt: str, size: tuple[int, int], export_cache
) -> None:
    """The truth here is data flow, not graph order: a TransBlock stage is what lies between
    its unfold convolution and its fold convolution (weights `tokens.*`). The random models'
    two stages have identical LayerNorm weights (merged into one initializer on export)."""
    from lbnet_deploy.calibration.quantize import quantizable_nodes

    fp32 = onnx.load(export_cache(ckpt, size))
    found = blocks(fp32)
    assert set(found) == {"head", "r1", "r2", "r3", "se", "c1", "attention", "attention2", "tail"}
    where = {node: block for block, nodes in found.items() for node in nodes}
    assert sorted(where) == sorted(quantizable_nodes(fp32)), "every quantizable node, once"
    inits = {i.name for i in fp32.graph.initializer}
    token = [
        n.name
        for n in fp32.graph.node
        if n.op_type == "Conv" and any(i.startswith("tokens") for i in n.input if i in inits)
    ]
    assert len(token) == 4  # unfold, fold of stage 1; unfold, fold of stage 2
    stages = {}
    for stage, (unfold, fold) in zip(
        ("attention", "attention2"), (token[:2], token[2:]), strict=True
    ):
        assert fold in _descendants(fp32, unfold)  # an unfold and its own fold, by data flow
        stages[stage] = _descendants(fp32, unfold) - _descendants(fp32, fold) - {fold}
        assert where[unfold] == where[fold] == stage
    assert token[2] in _descendants(fp32, token[1])  # stage 2 runs on stage 1's output
    weight_matmuls = [n for n in fp32.graph.node if n.op_type == "MatMul" and n.name in where]
    assert weight_matmuls
    for node in weight_matmuls:
        inside = [stage for stage, members in stages.items() if node.name in members]
        assert inside == [where[node.name]], node.name
    assert {where[n.name] for n in weight_matmuls} == {"attention", "attention2"}
    for node in fp32.graph.node:  # a Conv named by its module lands in that module's block
        if node.op_type == "Conv" and node.name in where and node.name not in token:
            module = next(i for i in node.input if i in inits).split(".")[0]
            assert where[node.name] == CONV_BLOCK.get(module, module), (node.name, module)
    assert len(found["tail"]) == 2 and len(found["head"]) == 2


def test_graphics_are_seeded_slides_of_flat_saturated_colours() -> None:
    """The held-out graphics: the same pixels for a seed (numpy only), flat regions with hard
    edges and saturated colours, the LR half of a pair made as the benchmarks' LR images."""
    from lbnet_deploy.quality.imresize import imresize

    a, b, c = graphic(3), graphic(3), graphic(4)
    assert a.shape == (512, 512, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    same_as_left = np.all(a[:, 1:] == a[:, :-1], axis=2).mean()
    assert same_as_left > 0.8  # flat areas ...
    assert np.abs(np.diff(a.astype(int), axis=1)).max() >= 200  # ... with hard edges
    assert ((a == 0) | (a == 255)).all(axis=2).mean() > 0.2  # primaries, black, white
    pairs = graphics_pairs(3, (20, 24), count=3, seed=5)
    assert [(hr.shape, lr.shape) for hr, lr in pairs] == [((60, 72, 3), (20, 24, 3))] * 3
    assert np.array_equal(pairs[0][1], imresize(pairs[0][0], 1 / 3))
    assert np.array_equal(pairs[0][0], graphics_pairs(3, (20, 24), count=1, seed=5)[0][0])


def test_graphics_crops_are_scored_pooled_beside_the_photos(int8_random) -> None:
    """The search's drop is the photos' mean drop, or the graphics' pooled drop where that is
    larger; each layer's error counts the graphics too. Pooled, a near-lossless flat crop
    cannot swing the drop as its own PSNR would."""
    from lbnet_deploy.calibration.quantize import _pooled_drop, _pooled_mse, _Scorer, _sr
    from lbnet_deploy.calibration.session import GraphRunner
    from lbnet_deploy.quality.metrics import psnr_y

    fp32, _, quantizer = int8_random
    photos = graphics_pairs(4, (16, 16), count=2, seed=7)  # any pairs stand in for photos here
    graphics = graphics_pairs(4, (16, 16), count=3, seed=8)
    candidate = quantizer.quantize()  # every layer INT8
    ref, cand = GraphRunner(fp32), GraphRunner(candidate)
    pooled = _pooled_drop(
        _pooled_mse([_sr(ref, lr) for _, lr in graphics], graphics, 4),
        _pooled_mse([_sr(cand, lr) for _, lr in graphics], graphics, 4),
    )
    alone, both = _Scorer(fp32, photos, 4), _Scorer(fp32, photos, 4, graphics)
    photo_drop = alone.drop(candidate)
    for shift in (-1.0, 1.0):  # the photos' references moved: their mean drop below, above
        both.psnr = [p + pooled - photo_drop + shift for p in alone.psnr]
        assert both.drop(candidate) == pytest.approx(max(pooled, pooled + shift), abs=1e-9)
    assert both.error(candidate, 1) != alone.error(candidate, 1)

    rng = np.random.default_rng(0)
    busy = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    flat = np.full((40, 40, 3), 128, np.uint8)
    noisy = np.clip(busy.astype(int) + rng.integers(-3, 4, busy.shape), 0, 255).astype(np.uint8)
    speck = flat.copy()
    speck[20, 20] = 129  # one level at one pixel
    pairs = [(busy, busy), (flat, flat)]  # HR; FP32 gave noisy and flat, INT8 adds the speck
    drop = _pooled_drop(_pooled_mse([noisy, flat], pairs, 4), _pooled_mse([noisy, speck], pairs, 4))
    assert psnr_y(flat, flat, 4) - psnr_y(speck, flat, 4) == float("inf")  # that crop alone
    assert 0 < drop < 0.01
    lossless = _pooled_mse([flat], pairs[1:], 4)  # 0: infinite PSNR, yet finite drops
    assert lossless == 0 and _pooled_drop(lossless, lossless) == 0
    assert 0 < _pooled_drop(lossless, _pooled_mse([speck], pairs[1:], 4)) < float("inf")


def test_calibrate_scores_graphics_beside_the_photos(
    export_cache, photo_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lbnet_deploy.calibration import run

    seen: dict[str, object] = {}
    real = run.quantize_mixed

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "quantize_mixed", spy)
    fp32 = export_cache("random-LBNet-T-x4", (16, 16))
    run.calibrate_file(fp32, photo_folder, tmp_path / "i8.onnx", samples=4, max_psnr_drop=1.0)
    graphics = seen["graphics"]
    assert isinstance(graphics, list) and len(graphics) == 8
    assert graphics[0][0].shape == (64, 64, 3) and graphics[0][1].shape == (16, 16, 3)


def test_calibration_crops_are_deterministic(photo_folder: Path) -> None:
    a = calibration_crops(photo_folder, 2, (16, 16), count=4, seed=3, progress=False)
    b = calibration_crops(photo_folder, 2, (16, 16), count=4, seed=3, progress=False)
    c = calibration_crops(photo_folder, 2, (16, 16), count=4, seed=4, progress=False)
    assert a.shape == (4, 3, 16, 16) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_too_few_or_unreadable_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(LBNetError, match="needs at least 8"):
        calibration_crops(tmp_path, 2, (16, 16), min_images=8, progress=False)
    with pytest.raises(LBNetError, match="at least 128x128"):  # 32x32 at x4: 64 px is too small
        calibration_crops(tmp_path, 4, (32, 32), min_images=1, progress=False)
    # an unreadable photo is reported and left out: it does not stop the calibration ...
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="lbnet_deploy"):
        crops = calibration_crops(tmp_path, 2, (16, 16), min_images=2, progress=False)
    assert len(crops) > 0 and "broken.jpg" in caplog.text
    with pytest.raises(LBNetError, match="only 2 images"):  # ... nor counts towards the minimum
        calibration_crops(tmp_path, 2, (16, 16), min_images=3, progress=False)


def _activation_scales(graph: onnx.ModelProto) -> dict[str, float]:
    inits = _inits(graph)
    return {
        n.input[0]: float(inits[n.input[1]])
        for n in graph.graph.node
        if n.op_type == "QuantizeLinear" and n.input[1] in inits
    }


@pytest.mark.slow  # ORT's per-tensor KL threshold search is a Python loop: ~4 min here
@needs_weights
@needs_photos
def test_entropy_is_not_minmax(int8, tmp_path: Path) -> None:
    """ORT's quantize_static runs Entropy with 128 bins for 128 quantized bins (one candidate
    threshold: MinMax again); ours histograms into 2048 bins, so most ranges clip below max."""
    fp32, minmax = int8
    crops = calibration_crops(PHOTOS, 4, SIZE, count=8, progress=False)
    entropy = Quantizer(fp32, crops, "Entropy", workdir=tmp_path).quantize(["tail.0"])
    a, b = _activation_scales(minmax), _activation_scales(entropy)
    assert a.keys() == b.keys()
    clipped = sum(b[k] < a[k] * 0.999 for k in a)
    assert clipped >= len(a) // 2, f"only {clipped} of {len(a)} ranges below MinMax's"
    assert all(b[k] <= a[k] * 1.001 for k in a), "entropy thresholds never exceed the max"
