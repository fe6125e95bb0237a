"""`lbnet-deploy bench` and its pieces: statistics, machine facts, MAC counting, memory, the
command end to end on a tiny input. No assertion depends on how fast anything ran."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lbnet_deploy.benchmarks.machine import machine_info
from lbnet_deploy.benchmarks.memory import PeakMemory
from lbnet_deploy.benchmarks.profile import attention_core_nodes, summarize_profile
from lbnet_deploy.benchmarks.stats import output_megapixels, summarize, throughput
from lbnet_deploy.errors import LBNetError
from lbnet_deploy.export.macs import count_macs

from .conftest import RANDOM_TOL, load_study

T4 = "random-LBNet-T-x4"  # bench plumbing does not need trained weights


def test_summarize_known_data() -> None:
    s = summarize([float(v) for v in range(1, 101)])  # 1..100
    assert s["median_s"] == pytest.approx(50.5)
    assert s["p90_s"] == pytest.approx(90.1)  # linear interpolation between order statistics
    assert s["p99_s"] == pytest.approx(99.01)
    assert (s["min_s"], s["max_s"], s["runs"]) == (1.0, 100.0, 100)
    assert summarize([0.2, 0.1, 0.3])["median_s"] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        summarize([])


def test_throughput_in_output_megapixels() -> None:
    mp = output_megapixels(2, (128, 128), 4)  # two 512x512 outputs
    assert mp == pytest.approx(2 * 512 * 512 / 1e6)
    assert throughput(mp, 0.5) == pytest.approx(2 * mp)


def test_machine_info_records_this_machine() -> None:
    import platform

    import onnxruntime

    info = machine_info(threads=1)
    assert info["threads_used"] == 1 and info["cpu_logical"] == os.cpu_count()
    assert 1 <= info["cpus_available"] <= os.cpu_count()
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    flags = info["cpu_flags"]
    assert isinstance(flags, list) and all(isinstance(f, str) for f in flags)
    if platform.machine() in ("x86_64", "AMD64") and Path("/proc/cpuinfo").is_file():
        cpuinfo = Path("/proc/cpuinfo").read_text()
        assert ("avx2" in flags) == (" avx2" in cpuinfo)  # the speed-relevant flags, as read
    assert info["versions"]["python"] == platform.python_version()
    assert info["versions"]["numpy"] == np.__version__
    assert info["versions"]["onnxruntime"] == onnxruntime.__version__
    assert info["gpu"] is None or info["gpu"]["name"]
    for lib in ("torch", "onnx"):
        assert info["versions"][lib], lib


def test_jetson_power_mode_is_recorded_where_there_is_one(tmp_path, monkeypatch) -> None:
    import shutil
    import stat

    from lbnet_deploy.benchmarks.machine import jetson_info

    assert jetson_info(tmp_path / "no-release") is None  # not a Jetson
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    tool = tmp_path / "nvpmodel"  # a stand-in printing what nvpmodel -q prints
    tool.write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert shutil.which("nvpmodel") == str(tool)
    info = jetson_info(release)
    assert info == {"l4t": "R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic",
                    "power_mode": "NV Power Mode: MAXN / 0"}  # fmt: skip


def _tiny_graph() -> onnx.ModelProto:
    """Conv 3->8 (3x3), grouped Conv 8->8 (groups 2, 1x1), reshape to tokens, MatMul with a
    weight, an activation x activation MatMul (attention-like), Gemm."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.random(shape, dtype=np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=2),
        helper.make_node("Reshape", ["c2", "shape"], ["t"]),  # (1, 8, 36)
        helper.make_node("Transpose", ["t"], ["tt"], perm=[0, 2, 1]),  # (1, 36, 8)
        helper.make_node("MatMul", ["tt", "w3"], ["m1"]),  # (1, 36, 5)
        helper.make_node("Transpose", ["m1"], ["m1t"], perm=[0, 2, 1]),  # (1, 5, 36)
        helper.make_node("MatMul", ["m1", "m1t"], ["scores"]),  # (1, 36, 36)
        helper.make_node("Reshape", ["scores", "flat"], ["s2"]),  # (36, 36)
        helper.make_node("Gemm", ["s2", "w4"], ["y"], transB=1),  # (36, 7)
    ]
    inits = [
        init("w1", 8, 3, 3, 3), init("w2", 8, 4, 1, 1), init("w3", 8, 5), init("w4", 7, 36),
        numpy_helper.from_array(np.array([1, 8, 36], np.int64), "shape"),
        numpy_helper.from_array(np.array([36, 36], np.int64), "flat"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_mac_count_matches_analytic() -> None:
    m = count_macs(_tiny_graph())
    conv = 8 * 6 * 6 * (3 * 3 * 3) + 8 * 6 * 6 * (4 * 1 * 1)  # out elements x (C_in/g * kh*kw)
    assert m["Conv"] == conv
    assert m["MatMul_weights"] == 36 * 5 * 8
    assert m["MatMul_attention"] == 36 * 36 * 5
    assert m["Gemm"] == 36 * 7 * 36
    assert m["total"] == conv + 36 * 5 * 8 + 36 * 36 * 5 + 36 * 7 * 36
    assert m["unknown_nodes"] == 0


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemory() as mem:
        pass
    if not mem.method.startswith("VmHWM"):
        pytest.skip(f"no resettable peak here ({mem.method}): only the process's lifetime peak")
    with PeakMemory() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert 56 <= mem.delta_mb <= 200, mem.delta_mb  # the 64 MiB seen, far from this process's peak
    with PeakMemory() as quiet:
        pass
    assert quiet.delta_mb < 16  # the peak was reset, not the lifetime maximum


def test_profile_summary_ranks_ops_and_times_the_core() -> None:
    def ev(op: str, dur: int, name: str = "n") -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}

    events = [ev("MatMul", 3000, "qk"), ev("MatMul", 1000), ev("Conv", 2000), {"cat": "Session"}]
    summary = summarize_profile(events, runs=2, core={"qk"})
    top = summary["top"]
    assert [t["op"] for t in top] == ["MatMul", "Conv"]
    assert top[0]["seconds_per_run"] == pytest.approx(0.002)
    assert top[0]["share"] == pytest.approx(4 / 6, abs=1e-3)
    assert summary["kernel_s"] == pytest.approx(0.003)
    assert summary["attention_core_s"] == pytest.approx(0.0015)


def test_attention_core_is_softmax_and_the_products_around_it() -> None:
    node = helper.make_node
    graph = helper.make_graph(
        [
            node("MatMul", ["x", "w"], ["u"], name="token_linear"),
            node("MatMul", ["u", "kt"], ["s"], name="qk"),
            node("Mul", ["s", "scale"], ["s2"], name="scale"),  # an unfused scale in between
            node("Softmax", ["s2"], ["p"], name="softmax"),
            node("MatMul", ["p", "v"], ["o"], name="pv"),
            node("MatMul", ["o", "w2"], ["y"], name="proj"),
        ],
        "g",
        [],
        [],
    )
    assert attention_core_nodes(graph) == {"qk", "softmax", "pv"}


def test_paper_rows_cover_the_paper_table() -> None:
    from lbnet_deploy.benchmarks.measure import PAPER_ROWS
    from lbnet_deploy.paper import RUNNING_TIME_X4

    assert [label for label, _ in PAPER_ROWS] == list(RUNNING_TIME_X4)
    assert dict(PAPER_ROWS)["TM-2 (released)"] == 3  # the released model: 3 applications


def test_add_bench_parser_sets_func() -> None:
    from lbnet_deploy.benchmarks.cli import add_bench_parser, cmd_bench

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--sizes", "64x64,128x96", "--backend", "ort,torch"])
    assert args.func is cmd_bench
    assert args.sizes == ((64, 64), (128, 96)) and args.backend == ("ort", "torch")
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--backend", "nope"])


def test_bench_writes_json_and_png(tmp_path, checkpoint, export_cache, shared_cache) -> None:
    from lbnet_deploy.benchmarks.cli import main

    export_cache(T4, (16, 16))  # the graph bench times, made once per run under its lock
    out_json, out_png, out_md = tmp_path / "B.json", tmp_path / "B.png", tmp_path / "B.md"
    rc = main([
        "--model", str(checkpoint(T4)), "--sizes", "16x16", "--runs", "2", "--warmup", "0",
        "--threads", "1", "--backend", "ort,torch,torch-cuda,openvino",
        "--json", str(out_json), "--plot", str(out_png), "--markdown", str(out_md),
    ])  # fmt: skip
    assert rc == 0
    result = json.loads(out_json.read_text())
    for key in ("schema", "machine", "settings", "roofline", "forward", "skipped"):
        assert key in result
    rows = {r["backend"]: r for r in result["forward"]}
    assert set(rows) >= {"ort", "torch"}
    if importlib.util.find_spec("openvino"):
        assert "openvino" in rows
    for row in rows.values():
        assert row["stats"]["runs"] == 2 and len(row["samples_s"]) == 2
        for key in ("median_s", "p90_s", "p99_s", "min_s", "max_s"):
            assert row["stats"][key] > 0
        assert row["throughput_mpix_s"] > 0 and row["peak_rss_mb"] > 0 and row["gmacs"] > 0
    if not result["machine"]["gpu"]:
        assert any(s["config"].startswith("torch-cuda") for s in result["skipped"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = out_md.read_text()
    for name, row in rows.items():  # the report's forward table shows each measured median
        line = next(x for x in text.splitlines() if x.startswith(f"| {name} |"))
        assert f"| {row['stats']['median_s'] * 1e3:.1f} |" in line, line
    assert result["machine"]["cpu_model"] in text


@pytest.mark.parametrize("graphs", [True, False])
def test_bench_times_engines_through_the_tensorrt_runner(
    graphs, tmp_path, monkeypatch, checkpoint, shared_cache
) -> None:
    """The bench plumbing for engines (export, cached build, timing, device memory), against
    the fake TensorRT: the timings are the fake's, what is checked is that they are taken, with
    CUDA graphs replayed or (--no-cuda-graph) each batch enqueued."""
    from lbnet_deploy.benchmarks.cli import main

    from .fake_tensorrt import FakeTensorRT

    fake = FakeTensorRT().install(monkeypatch)
    out_json = tmp_path / "B.json"
    rc = main([
        "--model", str(checkpoint(T4)), "--sizes", "16x16", "--runs", "2", "--warmup", "1",
        "--backend", "tensorrt", "--precision", "fp32,fp16", "--json", str(out_json),
        *([] if graphs else ["--no-cuda-graph"]),
    ])  # fmt: skip
    assert rc == 0
    rows = json.loads(out_json.read_text())["forward"]
    assert [(r["backend"], r["precision"]) for r in rows] == [
        ("tensorrt", "fp32"), ("tensorrt", "fp16"),
    ]  # fmt: skip
    for row in rows:
        assert row["stats"]["runs"] == 2 and row["device_peak_mb"] > 0
    # one engine per precision, or none where the other case built them into the shared cache
    assert len(fake.called("build_serialized_network")) in (0, 2)
    if graphs:  # per engine: two slots, each enqueued once and captured once; runs replay
        assert len(fake.called("execute_async_v3")) == 2 * 2 * 2
        assert len(fake.called("graph_launch")) == 2 * 3  # warm-up + runs, per engine
    else:
        assert len(fake.called("execute_async_v3")) == 2 * 3
        assert fake.called("begin_capture") == fake.called("graph_launch") == []


@pytest.mark.slow  # a second (plain) export and two profiled sessions: ~40 s on 2 cores
def test_bench_compare_splits_each_profile_into_attention_core_and_rest(
    tmp_path, checkpoint, shared_cache
) -> None:
    from lbnet_deploy.benchmarks.cli import main

    out_json, out_md = tmp_path / "B.json", tmp_path / "B.md"
    rc = main([
        "--model", str(checkpoint(T4)), "--sizes", "16x16", "--runs", "1", "--warmup", "0",
        "--threads", "1", "--compare", "--compare-size", "16x16",
        "--json", str(out_json), "--markdown", str(out_md),
    ])  # fmt: skip
    assert rc == 0
    profiles = json.loads(out_json.read_text())["comparison"]["profile"]
    assert set(profiles) == {"ours (ort)", "plain export (ort-plain)"}
    for prof in profiles.values():
        assert 0 < prof["attention_core_s"] < prof["kernel_s"]
    text = out_md.read_text()
    assert "the attention core" in text and "For 1.3x, a pass must take at most" in text
    assert "CPU goals. The default CPU path" in text
    if importlib.util.find_spec("openvino"):
        ov = json.loads(out_json.read_text())["comparison"]["profile_openvino"]
        assert "ours (openvino)" in ov and ov["ours (openvino)"]["compute"] == "fp32"
        assert "OpenVINO profile, ours (openvino)" in text


def test_fused_attention_kernels_agree_with_the_exported_form() -> None:
    compare = load_study("attention_kernels").compare

    result = compare(size=16, heads=2, dim=5, runs=1)
    assert len(result) == 3
    for name, r in result.items():
        assert r["max_abs"] < 1e-4, name  # same attention, three kernels
        assert r["median_s"] > 0


def test_openvino_attention_by_head_width_reports_its_kernel() -> None:
    pytest.importorskip("openvino")
    widths = load_study("attention_kernels").openvino_widths(
        size=16, heads=2, widths=(4, 8), runs=1
    )
    assert "fp32" in widths
    for rows in widths.values():
        assert sorted(rows) == [4, 8]
        for row in rows.values():
            assert row["median_s"] > 0 and row["ns_per_score"] > 0 and row["kernels"]


def _rendered(**parts: object) -> str:
    """RESULTS.md as `render` writes it for a result holding only `parts`."""
    from lbnet_deploy.benchmarks.markdown import render

    result = {"model": "m", "started": "t", "seconds_total": 1, "machine": machine_info(1)}
    return render({**result, **parts})


def test_forward_table_gives_speedup_over_fp32() -> None:
    def row(precision: str, median: float) -> dict:
        stats = {k: median for k in ("median_s", "p90_s", "p99_s", "min_s", "max_s")}
        return {
            "backend": "ort", "precision": precision, "size": [64, 64], "batch": 1,
            "stats": {**stats, "runs": 3}, "throughput_mpix_s": 1.0, "peak_rss_mb": 1.0,
            "rss_delta_mb": 0.0,
        }  # fmt: skip

    text = _rendered(forward=[row("fp32", 0.3), row("int8", 0.2)])
    assert "| 300.0 | 1.00x |" in text and "| 200.0 | 1.50x |" in text


def test_a_comparison_measured_later_is_judged_on_its_own_peaks() -> None:
    """RESULTS.md splices a comparison measured again later: its floor and fractions use the
    peaks measured with it, not the rest of the report's (peaks move by the hour here)."""
    stats = {"median_s": 0.5, "p90_s": 0.5, "min_s": 0.5, "runs": 1}
    comparison = {
        "size": [8, 8], "against": "straightforward port", "goals_met": False,
        "stats": {"ours (ort)": stats, "ours (openvino bf16-attn)": stats},
        "speedup_vs_eager": 1.0, "speedup_vs_plain": 1.0, "goal_vs_eager": 4.0,
        "goal_vs_plain": 1.3, "macs": {"total": 1e9, "MatMul_attention": 5e8}, "floor_s": 0.005,
        "fraction_of_peak": {"ours (ort)": 0.01},
    }  # fmt: skip
    old = {"peak_gmacs": 100.0, "peaks_gmacs": {"fp32": 100.0}, "rates_gmacs": {}, "method": "m"}
    new = {"peak_gmacs": 200.0, "peaks_gmacs": {"fp32": 200.0}, "rates_gmacs": {}, "method": "m"}
    text = _rendered(roofline=old, comparison=comparison)
    assert "FP32 peak of 100.0 GMAC/s" in text and "run of its own" not in text
    # what bf16-attn covered is the run's own record (before it was kept: the attention alone)
    assert "'bf16-attn': OpenVINO with only the attention products in BF16" in text
    covers = comparison | {"bf16_attn_covers": "the Transformer's matrix products (x)"}
    text = _rendered(roofline=old, comparison=covers)
    assert "'bf16-attn': OpenVINO with only the Transformer's matrix products (x) in BF16" in text
    text = _rendered(roofline=old, comparison=comparison | {"started": "T2", "roofline": new})
    assert "FP32 peak of 200.0 GMAC/s" in text
    assert (
        "run of its own started T2, with the MatMul peaks measured in that run: fp32 200.0" in text
    )


def test_each_kind_of_cpu_keeps_its_latest_comparison(tmp_path: Path) -> None:
    """`report --comparison FILE`: the run's comparison becomes RESULTS.md's, with the machine
    and peaks of that run; the one it replaces stays under 'other kinds of CPU' when measured
    on another kind (model and flags), and a kind measured again replaces its older run."""
    from lbnet_deploy.benchmarks.report import main as report

    def run(model: str, flags: list[str] | None, started: str, plain_s: float, schema1=False):
        stats = {"median_s": 0.5, "p90_s": 0.5, "min_s": 0.5, "runs": 1}
        peaks = {"peak_gmacs": 90.0, "method": "m"} | (
            {} if schema1 else {"peaks_gmacs": {"fp32": 90.0, "bf16": 300.0}, "rates_gmacs": {}}
        )
        return {
            "model": "m", "started": started, "seconds_total": 1, "roofline": peaks,
            "machine": {"cpu_model": model, "cpu_flags": flags, "versions": {}, "platform": "p"},
            "comparison": {
                "size": [8, 8], "against": "official code", "goals_met": False,
                "stats": {
                    "ours (ort)": stats, "official code, plain export (ort)": stats | {
                        "median_s": plain_s
                    },
                },
                "speedup_vs_eager": 1.0, "speedup_vs_plain": 1.0, "goal_vs_eager": 4.0,
                "goal_vs_plain": 1.3, "fraction_of_peak": {"ours (ort)": 0.25},
            },
        }  # fmt: skip

    main_run = run("Xeon", ["avx512f", "amx_tile"], "2026-12-01T00:00", 0.6)
    main_run["machine"] = machine_info(1) | main_run["machine"]
    (tmp_path / "results.json").write_text(json.dumps(main_run))
    for name, other in {
        "avx2.json": run("EPYC", None, "2026-11-26T00:00", 1.0, schema1=True),
        "old.json": run("EPYC", ["avx512f"], "2026-12-02T00:00", 0.7),
        "new.json": run("EPYC", ["avx512f"], "2026-12-04T00:00", 0.8),
    }.items():
        (tmp_path / name).write_text(json.dumps(other))
        note = ["--note", "flags were not recorded then"] if name == "avx2.json" else []
        args = ["--out-dir", str(tmp_path), "--comparison", str(tmp_path / name), *note]
        assert report(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["comparison"]["started"] == "2026-12-04T00:00"
    assert result["comparison"]["machine"]["cpu_flags"] == ["avx512f"]
    kinds = {(o["machine"]["cpu_model"], o["started"]) for o in result["other_cpus"]}
    assert kinds == {("Xeon", "2026-12-01T00:00"), ("EPYC", "2026-11-26T00:00")}  # old: gone
    avx2 = next(o for o in result["other_cpus"] if o["machine"]["cpu_model"] == "EPYC")
    assert avx2["roofline"]["peaks_gmacs"] == {"fp32": 90.0}  # schema 1, read as FP32's
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## The comparison on other kinds of CPU" in text
    assert "on another machine, EPYC (avx512f), with the MatMul peaks" in text
    assert "### EPYC (CPU flags not recorded), 2026-11-26: ours vs plain export" in text
    assert "flags were not recorded then" in text
    # ratio over the official plain export in ORT and fraction of the FP32 peak, per kind
    assert "| 800.0 ms | ours (ort): 1.60x, 25% of peak |" in text
    assert "| 600.0 ms | ours (ort): 1.20x, 25% of peak |" in text
    assert "| EPYC (avx512f) (above) | 2026-12-04 |" in text
    # an older run of a kind kept is refused, and nothing is written
    before = (tmp_path / "results.json").read_text()
    for name, message in (
        ("old.json", "would replace a later one"),
        ("none.json", "KeyError: 'comparison'"),
    ):
        (tmp_path / "none.json").write_text(json.dumps({"machine": {}}))
        with pytest.raises(SystemExit, match=message):
            report(["--out-dir", str(tmp_path), "--comparison", str(tmp_path / name)])
    with pytest.raises(SystemExit, match="cannot read"):
        report(["--out-dir", str(tmp_path), "--comparison", str(tmp_path / "missing.json")])
    assert (tmp_path / "results.json").read_text() == before
    # later in UTC though earlier on its own clock: a newer run, taken
    west = run("EPYC", ["avx512f"], "2026-12-03T20:00:00-0800", 0.9)  # 12-04 04:00 UTC
    (tmp_path / "west.json").write_text(json.dumps(west))
    assert report(["--out-dir", str(tmp_path), "--comparison", str(tmp_path / "west.json")]) == 0
    assert (
        json.loads((tmp_path / "results.json").read_text())["comparison"]["started"]
        == (west["started"])
    )
    (tmp_path / "results.json").write_text(before)
    # a full regeneration (bench's own result, on the Xeon again) keeps the other kinds
    from lbnet_deploy.benchmarks.report import _keep_other_cpus

    # (its clock behind the kept Xeon run's: a fresh full run is the latest all the same)
    fresh = run("Xeon", ["avx512f", "amx_tile"], "2026-11-30T00:00", 0.5)
    fresh["machine"] = machine_info(1) | fresh["machine"]
    (tmp_path / "results.json").write_text(json.dumps(fresh))
    _keep_other_cpus(json.loads(before), tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    kinds = [(o["machine"]["cpu_model"], o["started"]) for o in result["other_cpus"]]
    assert kinds == [("EPYC", "2026-11-26T00:00"), ("EPYC", "2026-12-04T00:00")]
    assert (
        result["started"] == "2026-11-30T00:00"
        and "(above)" in (tmp_path / "RESULTS.md").read_text()
    )


def test_tiled_verdict_needs_256_and_up() -> None:
    def r(mode: str, n: int, s: float) -> dict:
        macs = {"total": 1e9, "MatMul_attention": 2e8}
        return {"mode": mode, "size": n, "stats": {"median_s": s}, "macs": macs, "tiles": 1,
                "throughput_mpix_s": 1.0, "rss_delta_mb": 0.0}  # fmt: skip

    def verdict(*rows: dict) -> str:
        return next(
            line for line in _rendered(scaling=list(rows)).splitlines() if "Tiled speed-up" in line
        )

    met = verdict(r("whole", 256, 10.0), r("tiled", 256, 4.0), r("tiled", 512, 9.0))
    assert "256x256: 2.50x" in met and "met" in met and "missed" not in met
    assert "**missed**" in verdict(r("whole", 256, 10.0), r("tiled", 256, 6.0))
    assert "not measured" in verdict(r("whole", 128, 1.0), r("tiled", 128, 2.0))


def test_int8_bench_needs_calibration_photos(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lbnet_deploy.benchmarks.models import skip_reason

    monkeypatch.setenv("LBNET_CALIB_DIR", str(tmp_path / "missing"))
    assert "no calibration photos" in (skip_reason("ort", "int8") or "")
    assert "FP32 and FP16 only" in (skip_reason("torch", "int8") or "")
    monkeypatch.setenv("LBNET_CALIB_DIR", str(tmp_path))
    assert skip_reason("ort", "int8") is None


def test_official_repo_must_be_a_checkout(tmp_path) -> None:
    from lbnet_deploy.benchmarks.official import load_official
    from lbnet_deploy.errors import LBNetError

    with pytest.raises(LBNetError, match="not a checkout of IVIPLab/LBNet"):
        load_official(tmp_path, "lbnet-t-x4")


def test_precision_study_counts_nonfinite_outputs() -> None:
    FiniteCheck = load_study("precision_study").FiniteCheck

    class Fake:
        scale = 2

        def infer(self, batch: np.ndarray) -> np.ndarray:
            out = np.zeros((1, 3, 2, 2), np.float32)
            out[0, 0, 0, :] = [np.nan, np.inf]
            return out

    check = FiniteCheck(Fake())
    check.infer(np.zeros((1, 3, 1, 1), np.float32))
    assert (check.nonfinite, check.calls, check.scale) == (2, 1, 2)


@pytest.mark.parametrize(("drop", "verdict"), [(0.004, "may run by default"), (0.02, "opt-in")])
def test_precision_study_judges_bf16_against_its_bound(drop: float, verdict: str) -> None:
    study = load_study("precision_study")

    def run(psnr: float) -> dict:
        return {"psnr": psnr, "images": {"a": psnr}, "tiled": [], "nonfinite_values": 0}

    rows = {"openvino-fp32": run(30.0), "openvino-bf16": run(30.0 - drop)}
    study._drops(rows, "openvino-fp32", ("openvino-bf16",))
    bf16 = {"openvino": "2026.4", "cpu": "X", "cpu_flags": ["avx512_bf16"], "datasets": {}}
    # bf16-attn measured on the first model only, 0.001 dB off
    mixed = {k: dict(v) for k, v in rows.items()} | {study.ATTN: run(29.999)}
    study._drops(mixed, "openvino-fp32", (study.ATTN,))
    results = [
        {"model": "m", "bf16": bf16 | {"datasets": {"Set5": mixed}}},
        {
            "model": "n",
            "bf16": bf16 | {"datasets": {"Set5": {k: dict(v) for k, v in rows.items()}}},
        },
    ]
    text = study.markdown(results)
    assert f"BF16 {'within' if drop < 0.01 else 'over'} 0.01 dB" in text and verdict in text
    assert f"| m | Set5 | 30.0000 | {30 - drop:.4f} | {drop:+.4f}" in text
    assert text.count("(over)") == (2 if drop > study.BF16_LIMIT_DB else 0)
    assert (
        "bf16-attn within 0.01 dB on every row: it may run by default (measured on 1 of 2" in text
    )
    assert "| +0.0010 | +0.0010 |" in text and "| — | — |" in text  # n: not measured


def test_which_qdq_patterns_ort_runs_as_integer_kernels() -> None:
    """The placement rule `calibrate`'s notes rely on: ORT CPU turns DQ->MatMul (float out)
    into MatMulIntegerToFloat, but a Conv needs its output quantized (DQ->Conv->Q) to become
    QLinearConv; DQ->Conv alone runs the float Conv."""
    compare = load_study("int8_kernels").compare

    result = compare(size=8, runs=1)
    assert "QLinearConv" in result["Conv 3x3 40->24 [dq-q]"]["kernels"]
    assert "QLinearConv" not in result["Conv 3x3 40->24 [dq]"]["kernels"]
    assert "Conv" in result["Conv 3x3 40->24 [dq]"]["kernels"]
    assert "MatMulIntegerToFloat" in result["MatMul 162->486 [dq]"]["kernels"]


def test_studies_default_to_the_shared_checkpoints_but_respect_the_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    checkout = load_study("checkout")
    shared = tmp_path / "shared"
    (shared / "weights").mkdir(parents=True)
    monkeypatch.setattr(checkout, "SHARED", shared)
    monkeypatch.delenv("LBNET_WEIGHTS_DIR", raising=False)
    checkout.use_shared_weights()
    assert os.environ["LBNET_WEIGHTS_DIR"] == str(shared / "weights")

    monkeypatch.setenv("LBNET_WEIGHTS_DIR", "/mine")
    checkout.use_shared_weights()
    assert os.environ["LBNET_WEIGHTS_DIR"] == "/mine"


def test_installed_bench_finds_data_where_the_user_says(monkeypatch: pytest.MonkeyPatch) -> None:
    from lbnet_deploy.benchmarks.bench import default_set5
    from lbnet_deploy.benchmarks.models import calibration_images

    monkeypatch.delenv("LBNET_SET5_DIR", raising=False)
    monkeypatch.delenv("LBNET_CALIB_DIR", raising=False)
    monkeypatch.setenv("LBNET_DATA_DIR", "/data/here")
    assert default_set5() == "/data/here/Set5"
    assert str(calibration_images()) == "/data/here/SunHays80"


def test_an_edsr_layout_dataset_is_what_all_times_end_to_end(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--all`'s default --dataset is Set5 (HR/ and LR_bicubic/X4/): accepted, its x4 LR run."""
    from PIL import Image

    from lbnet_deploy.benchmarks import bench
    from lbnet_deploy.benchmarks.cli import main

    class TimingStarted(Exception):
        pass

    def run_bench(opts):
        raise TimingStarted(opts.dataset)

    lr = tmp_path / "Set5" / "LR_bicubic" / "X4"
    lr.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(lr / "a.png")
    monkeypatch.setattr(bench, "run_bench", run_bench)
    with pytest.raises(TimingStarted):  # the options passed their checks
        main(["--dataset", str(tmp_path / "Set5")])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--plot", "B.txt"], "--plot B.txt: give a file name ending in .png"),
        (["--dataset", "no-such-folder"], "--dataset: input not found: no-such-folder"),
        (["--dataset", "."], "--dataset: no image files in folder ."),  # the empty cwd
        (["--official-repo", "no-such-checkout"], "is not a checkout of IVIPLab/LBNet"),
        (["--runs", "0"], "--runs and --batch must be >= 1"),
    ],
)
def test_bad_bench_options_fail_before_any_timing(
    option: list[str], message: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from lbnet_deploy.benchmarks import bench
    from lbnet_deploy.benchmarks.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "run_bench", lambda opts: pytest.fail("timing started"))
    assert main(["--json", "B.json", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_scaling_skips_whole_sizes_that_exceed_the_memory_cap_without_exporting_them(
    monkeypatch: pytest.MonkeyPatch, checkpoint, shared_cache
) -> None:
    from lbnet_deploy.benchmarks import measure as studies
    from lbnet_deploy.descriptor import describe
    from lbnet_deploy.metadata import ModelFacts

    opened: list[tuple[int, int]] = []
    real_open = studies.open_bench_runner

    def recording_open(backend, spec, size, **kw):
        opened.append(size)
        return real_open(backend, spec, size, **kw)

    monkeypatch.setattr(studies, "open_bench_runner", recording_open)
    facts = ModelFacts(describe("LBNet-T", 4))
    cap_mb = facts.inference_bytes(24 * 24) / 2**20  # 16 fits, 32 does not
    timing = studies.Timing(warmup=0, runs=1, threads=1, log=lambda *_: None)
    rows = studies.scaling_study(
        str(checkpoint(T4)), (16, 32), (32,), timing, tile=16, overlap=4, memory_cap_mb=cap_mb
    )
    whole = {r["size"]: r for r in rows if r["mode"] == "whole"}
    assert "stats" in whole[16]
    assert "needs ~" in whole[32]["skipped"] and "stats" not in whole[32]
    assert (32, 32) not in opened  # no graph exported for a size that is not run
    tiled = [r for r in rows if r["mode"] == "tiled"]
    assert tiled and tiled[0]["stats"]["median_s"] > 0


def test_bench_pins_the_allocator_and_records_it() -> None:
    """In a child process: pinning changes the allocator of the whole process it runs in."""
    import platform
    import subprocess
    import sys

    code = (
        "from lbnet_deploy.benchmarks.allocator import pin_malloc_thresholds\n"
        "from lbnet_deploy.benchmarks.machine import machine_info\n"
        "text = pin_malloc_thresholds()\n"
        "assert machine_info()['allocator'] == text, machine_info()['allocator']\n"
        "print(text)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert "pinned at 32 MiB" in out.stdout


def test_contenders_are_the_registry_backends_plus_comparison_points() -> None:
    """bench times every backend the product runs files on, under the registry's names (torch
    is the registry's reference, as in `upscale --backend torch`), and opens each through it."""
    from lbnet_deploy.benchmarks.models import CONTENDERS, skip_reason
    from lbnet_deploy.runtime import registry

    for name in registry.names("onnx") + registry.names("engine"):
        assert CONTENDERS[name].backend == name and CONTENDERS[name].graph == "ours"
    assert CONTENDERS["torch"].ops == "reference" and CONTENDERS["torch-ours"].ops == "static"
    # every contender is a registry entry but the null backend, the stand-in for a device
    assert all(c.backend in registry.BACKENDS for c in CONTENDERS.values() if c.name != "null")
    assert CONTENDERS["null"].graph == "null" and "null" not in registry.BACKENDS
    with pytest.raises(LBNetError, match="unknown bench backend"):
        skip_reason("torch-reference", "fp32")
    assert "fp32, fp16, int8 only" in (skip_reason("ort", "bf16") or "")


def test_eager_contenders_open_the_runtime_torch_runner(checkpoint) -> None:
    from lbnet_deploy.benchmarks.models import open_bench_runner
    from lbnet_deploy.runtime.torch_ref import TorchRunner

    ours, _ = open_bench_runner("torch-ours", str(checkpoint(T4)), (8, 8))
    ref, _ = open_bench_runner("torch", str(checkpoint(T4)), (8, 8))
    assert isinstance(ours, TorchRunner) and isinstance(ref, TorchRunner)
    assert (ours.describe()["backend"], ref.describe()["backend"]) == ("torch-ours", "torch")
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32) * 255
    assert np.abs(ours.infer(x) - ref.infer(x)).max() < RANDOM_TOL  # two forms, one network


@pytest.mark.slow  # exports every attention form and times each: ~20 s on 2 cores
def test_cpu_backend_study_times_each_runtime_on_the_graphs_users_get(
    export_cache, shared_cache, checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study behind the default CPU backend: interleaved, both runtimes, a table that
    names the CPU's flags and each contender against the plain export on ONNX Runtime."""
    from lbnet_deploy.benchmarks.models import skip_reason

    study = load_study("cpu_backends")
    # the dynamic graphs (shared by the run) only: the fixed and plain exports cost 20 s each
    dynamic = [c for c in study.CONTENDERS if c[2] == "dynamic"]
    monkeypatch.setattr(study, "CONTENDERS", dynamic)
    monkeypatch.setattr(study, "BASELINE", "ort dynamic batched")
    for form in ("batched", "flat"):
        export_cache(T4, form=form)
    row = study.time_size(str(checkpoint(T4)), 8, 2, 0, 1, {"fp32", "bf16"}, {"batched", "flat"})
    assert row["vs_plain_ort"]["ort dynamic batched"] == 1.0
    expected = {"ort dynamic batched", "ort dynamic flat"}
    if importlib.util.find_spec("openvino"):
        expected |= {"openvino dynamic batched", "openvino dynamic flat"}
        if skip_reason("openvino", "bf16") is None:  # a CPU with AVX512-BF16 or AMX
            expected |= {"openvino dynamic batched bf16", "openvino dynamic flat bf16"}
    assert set(row["stats"]) == expected and all(s["runs"] == 2 for s in row["stats"].values())
    text = study.table([row], {"cpu_model": "X", "threads_used": 1, "cpu_flags": ["avx2", "sse"]})
    assert "X, 1 threads, flags: avx2" in text and "| contender | 8x8 |" in text
    assert "| ort dynamic batched | " in text and "(1.00x)" in text


def test_bench_times_the_products_own_fp16_graph(export_cache, shared_cache, checkpoint) -> None:
    """One FP16 cache: bench's FP16 graph of the shipped configuration is `upscale`'s file."""
    from lbnet_deploy.benchmarks.models import bench_onnx
    from lbnet_deploy.resolve import model_file

    export_cache(T4, (16, 16))
    ckpt = str(checkpoint(T4))
    path = bench_onnx(ckpt, (16, 16), precision="fp16")
    assert path == model_file(ckpt, input_size=(16, 16), batch=1, precision="fp16")
    key = path.name.split("-")[0]  # the checkpoint's hash: other tests share this cache
    assert len(list(path.parent.rglob(f"{key}*16x16*fp16*.onnx"))) == 1


def test_device_contenders_skip_where_the_device_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu lists CUDA and TensorRT providers without a GPU: bench must ask for the
    device, not the provider, or it exports and then fails the whole run."""
    from lbnet_deploy.benchmarks import models

    monkeypatch.setattr(models, "cuda_device", lambda: False)
    for name in ("ort-cuda", "ort-tensorrt", "torch-cuda"):
        assert models.skip_reason(name, "fp32") == "no CUDA device"
    if importlib.util.find_spec("openvino"):
        import openvino as ov

        if "NPU" not in ov.Core().available_devices:
            assert "no NPU device" in (models.skip_reason("openvino-npu", "fp32") or "")


def test_the_peak_is_measured_per_precision_with_the_models_libraries() -> None:
    from lbnet_deploy.benchmarks.roofline import matmul_graph, measure_peak, peak_for
    from lbnet_deploy.runtime.onnxrt import create_session

    # the INT8 graph is the product it claims: int8 weights times the rounded activation
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    graph = onnx.load_from_string(matmul_graph(64, int8=True))
    w = numpy_helper.to_array(next(i for i in graph.graph.initializer if i.name == "w_q"))
    want = np.clip(np.round(x / 0.01), -128, 127) * 0.01 @ (w.astype(np.float32) * 0.01)
    got = create_session(matmul_graph(64, int8=True)).run(None, {"a": x})[0]
    assert np.abs(got - want).max() < 1e-3
    r = measure_peak(threads=1, n=64, repeats=1)
    rates = r["rates_gmacs"]
    assert set(rates["fp32"]) >= {"onnxruntime"} and set(rates["int8"]) >= {"onnxruntime"}
    assert r["peaks_gmacs"] == {p: max(by.values()) for p, by in rates.items()}
    assert r["peak_gmacs"] == r["peaks_gmacs"]["fp32"]
    if importlib.util.find_spec("openvino"):
        from lbnet_deploy.benchmarks.models import skip_reason

        assert "openvino" in rates["fp32"] and "openvino" in rates["int8"]
        assert ("bf16" in rates) == (skip_reason("openvino", "bf16") is None)
    peaks = {"fp32": 100.0, "int8": 400.0}
    assert peak_for(peaks, "fp16", gpu=False) == 100.0  # FP16 on a CPU: FP32 kernels
    assert peak_for(peaks, "int8", gpu=False) == 400.0
    assert peak_for(peaks, "bf16", gpu=False) is None  # not measured: no fraction
    assert peak_for(peaks, "fp32", gpu=True) is None  # a GPU row is not judged by the CPU


def test_openvino_profile_names_the_kernel_each_node_ran(tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed")
    from lbnet_deploy.benchmarks.profile import profile_openvino
    from lbnet_deploy.benchmarks.roofline import matmul_graph

    path = tmp_path / "mm.onnx"
    path.write_bytes(matmul_graph(512))  # ~1 ms: more than the 0.1 ms the summary resolves
    x = np.ones((512, 512), np.float32)
    prof = profile_openvino(path, x, threads=1, runs=3)
    product = next(t for t in prof["top"] if t["op"].startswith("FullyConnected ("))
    assert product["nodes"] == 1  # per run, not summed over the 3 runs
    assert product["op"].endswith(")") and len(product["op"]) > len("FullyConnected ()")
    assert 0 < product["seconds_per_run"] <= prof["kernel_s"]
    assert sum(t["share"] for t in prof["top"]) == pytest.approx(1.0, abs=0.01)


def test_profile_command_lists_the_kernels_of_a_fixed_size_graph(tmp_path: Path, capsys) -> None:
    """`python -m lbnet_deploy.benchmarks.profile G` (run under QEMU for another ISA): the
    kernel per node type and OpenVINO's capabilities; a graph of no fixed size is one line."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from lbnet_deploy.benchmarks.profile import main as profile
    from lbnet_deploy.benchmarks.roofline import matmul_graph

    path = tmp_path / "mm.onnx"
    path.write_bytes(matmul_graph(256))
    assert profile([str(path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "CPU capabilities" in out and "FP32" in out
    assert re.search(r"FullyConnected \(\w+\): \d+% of the time, 1 nodes", out)
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    onnx.save(model, tmp_path / "dynamic.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model")
    if "BF16" in out:  # a CPU that computes BF16: bf16-attn needs an attention to mark
        with pytest.raises(SystemExit, match="no attention found to compute in BF16"):
            profile([str(path), "--compute", "bf16-attn"])
    for path, message in (
        ("dynamic.onnx", "not a fixed-size"),
        ("missing.onnx", "No such file"),
        ("junk.onnx", "not a readable ONNX graph"),
    ):
        with pytest.raises(SystemExit, match=message):
            profile([str(tmp_path / path)])


def test_cpu_goals_judge_the_path_auto_runs_and_the_fastest_of_ours() -> None:
    from lbnet_deploy.benchmarks import measure
    from lbnet_deploy.benchmarks.markdown import _cpu_goals

    def stats(**ms: float) -> dict:
        names = {
            "ort": "ours (ort)", "ov": "ours (openvino)", "bf16": "ours (openvino bf16)",
            "attn": "ours (openvino bf16-attn)",
            "plain": measure.OFFICIAL_PLAIN, "plain_ov": measure.OFFICIAL_PLAIN_OV,
        }  # fmt: skip
        return {names[k]: {"median_s": v} for k, v in ms.items()}

    both = ("bf16", "bf16-attn")
    g = measure.cpu_goals(stats(ort=0.6, ov=0.5, bf16=0.3, plain=0.9, plain_ov=0.45), (), both)
    assert (g["default"], g["fastest"]) == ("ours (openvino)", "ours (openvino bf16)")
    assert g["ratios"] == {
        "default_vs_plain_ort": 1.8, "default_vs_plain_openvino": 0.9, "fastest_vs_plain_ort": 3.0
    }  # fmt: skip
    assert g["met"] == {
        "default_vs_plain_ort": True, "default_vs_plain_openvino": False,
        "fastest_vs_plain_ort": True,
    }  # fmt: skip
    text = " ".join(_cpu_goals(g))
    assert "**0.9x** (goal >= 1.0x: missed)" in text and "**3.0x** (goal >= 2.5x: met)" in text
    assert "no BF16 compute (none within" in text and "counts bf16 and bf16-attn" in text
    # BF16 over its bound for the model: the fastest FP32 path is judged
    g = measure.cpu_goals(stats(ort=0.6, ov=0.5, bf16=0.3, plain=0.9), (), ())
    assert g["fastest"] == "ours (openvino)"
    # bf16-attn within the bound on every checkpoint: a default path when auto would pick it
    g = measure.cpu_goals(
        stats(ort=0.6, ov=0.5, attn=0.4, bf16=0.3, plain=0.9), ["bf16-attn"], both
    )
    assert (g["default"], g["fastest"]) == ("ours (openvino bf16-attn)", "ours (openvino bf16)")
    assert g["ratios"]["default_vs_plain_ort"] == 2.25
    g = measure.cpu_goals(stats(ort=0.6, ov=0.5, attn=0.4, plain=0.9), (), ())
    assert g["default"] == g["fastest"] == "ours (openvino)"  # not measured within: not counted
    # OpenVINO faster by less than auto's margin: auto keeps ONNX Runtime, so does the goal
    assert measure.cpu_goals(stats(ort=0.52, ov=0.5, plain=0.9), (), ())["default"] == "ours (ort)"
    # without OpenVINO: ONNX Runtime is the default and the OpenVINO goal is not timed
    g = measure.cpu_goals(stats(ort=0.6, plain=0.9), both, both)
    assert g["default"] == g["fastest"] == "ours (ort)"
    assert g["ratios"]["default_vs_plain_openvino"] is None and "not timed" in _cpu_goals(g)[0]
    assert measure.cpu_goals(stats(plain=0.9), both, both) is None  # nothing of ours timed


def test_the_precisions_that_may_run_by_default_come_from_precision_md() -> None:
    from lbnet_deploy.benchmarks.accuracy import within_bound

    # PRECISION.md: whole BF16 loses up to 0.06 dB (LBNet x2 Set5), bf16-attn at most 0.003
    assert within_bound("bf16") is False and within_bound("bf16-attn") is True
    assert within_bound("bf16", ("lbnet-t-x4",)) is True  # -0.007 dB on Set5
    assert within_bound("bf16", ("lbnet-t-x2",)) is False  # -0.029 dB on Set5
    assert within_bound("bf16", ("not-a-model",)) is None
    assert within_bound("fp16") is None  # not a compute PRECISION.md measures on OpenVINO


def test_a_precision_measured_on_part_of_the_sets_is_no_pass(tmp_path, monkeypatch) -> None:
    from lbnet_deploy.benchmarks import accuracy

    def row(drop: float) -> dict:
        return {"openvino-bf16-attn": {"drop_db": drop}}

    def write(datasets: dict) -> bool | None:
        path = tmp_path / "precision.json"
        path.write_text(json.dumps([{"model": "m", "bf16": {"datasets": datasets}}]))
        monkeypatch.setattr(accuracy, "PRECISION_JSON", path)
        return accuracy.within_bound("bf16-attn", ("m",))

    assert write({"Set5": row(0.001), "Set14": row(-0.002)}) is True
    assert write({"Set5": row(0.001), "Set14": row(0.02)}) is False
    assert write({"Set5": row(0.001)}) is None  # Set14 not measured
    assert write({"Set5": row(0.001), "Set14": row(0.0), "Urban100": row(0.5)}) is True
    assert write({}) is None
    assert write({"Set5": row(0.001), "Set14": {}}) is None  # the run missing on one set
    assert write({"Set5": row(float("nan")), "Set14": row(0.0)}) is False
    (tmp_path / "precision.json").write_text("{not json")
    assert accuracy.within_bound("bf16-attn", ("m",)) is None


def test_null_backend_and_host_pipeline_reach_the_report(monkeypatch, capsys) -> None:
    """`bench --backend null --device-ms T` times the stand-in without exporting a graph; the
    host-pipeline study's figures are what RESULTS.md's section shows, goals judged."""
    from lbnet_deploy.benchmarks import measure
    from lbnet_deploy.benchmarks.cli import main
    from lbnet_deploy.benchmarks.measure import Timing, pipeline_study

    monkeypatch.setattr(measure, "bench_onnx", lambda *a, **k: pytest.fail("exported a graph"))
    args = ["--backend", "null", "--sizes", "16x16", "--batch", "2", "--runs", "3"]
    assert main([*args, "--warmup", "0", "--device-ms", "20", "--no-roofline"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("null"))
    assert float(line.split("median ")[1].split(" ms")[0]) >= 20  # the stand-in's device time
    study = pipeline_study(
        "lbnet-t-x4", Timing(warmup=0, runs=2), tile=16, image_size=(40, 48), batches=(1, 2),
        files=2,
    )  # fmt: skip
    rows, overlap = study["no_device"], study["overlap"]
    # 4x5 tiles of 16 (the overlap capped at 7 for them), in pairs
    assert [r["batch"] for r in rows] == [1, 2] and rows[1]["batches"] == 10
    assert overlap["device_ms"] == pytest.approx(1e3 * overlap["host_s"] / 10, abs=1e-3)
    assert overlap["ratio"] == pytest.approx(
        overlap["stats"]["overlapped"]["median_s"] / (overlap["host_s"] + overlap["device_s"]),
        abs=1e-3,
    )
    text = _rendered(pipeline=study)
    section = text[text.index("## Host pipeline") :]
    # in flight: the stand-in's three output buffers (each batch holds one until merged)
    assert f"| 2 | 10 | 3 | {rows[1]['mpix_s']['overlapped']} |" in section
    assert f"= {overlap['ratio']} x (host + device)" in section
    assert ("met" if overlap["met"] else "**missed**") in section
    assert f"({study['writes']['ratio']}x)" in section


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "ten", "1e300", "1000001"])
def test_device_ms_must_be_a_time(value: str, capsys) -> None:
    from lbnet_deploy.benchmarks.cli import main

    with pytest.raises(SystemExit):
        main(["--backend", "null", "--device-ms", value])
    assert "--device-ms" in capsys.readouterr().err


def test_the_report_generator_runs_the_host_pipeline_study(monkeypatch, tmp_path) -> None:
    """benchmarks/report.py (RESULTS.md) runs `bench --all`, which includes --pipeline."""
    from lbnet_deploy.benchmarks import bench, report

    seen = []

    def run_bench(opts):
        seen.append(opts)
        raise SystemExit(0)

    monkeypatch.setattr(bench, "run_bench", run_bench)
    monkeypatch.setattr(bench, "default_set5", lambda: ".")  # no dataset check to pass
    monkeypatch.setattr("lbnet_deploy.benchmarks.cli._check_before_timing", lambda o, p: None)
    with pytest.raises(SystemExit):
        report.main(["--out-dir", str(tmp_path)])
    assert seen and seen[0].pipeline and seen[0].scaling and seen[0].compare
