"""Render a bench result as the Markdown of benchmarks/RESULTS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REGENERATE = (
    "LBNET_WEIGHTS_DIR=../shared/weights LBNET_DATA_DIR=../shared/data "
    "python -m lbnet_deploy.benchmarks.report"
)


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f}"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _machine(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    v = m["versions"]
    gpu = m["gpu"]
    gpu_text = "none" if not gpu else f"{gpu['name']} (driver {gpu.get('driver', '?')})"
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return [
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}; {m['cpu_logical']} logical CPUs, "
        f"{m['cpus_available']} available to this process, {m['threads_used']} threads used",
        f"- CPU flags: {' '.join(m.get('cpu_flags') or []) or 'not recorded'}",
        f"- GPU: {gpu_text}",
        f"- Thread environment: {m.get('thread_env') or 'none set'}",
        f"- Memory allocator: {m.get('allocator', 'not recorded')}",
        f"- Platform: {m['platform']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average') or [])}",
        f"- Versions: {versions}",
        f"- Started {result['started']}, {result['seconds_total']} s in all",
        "",
    ]


def _roofline(result: dict[str, Any]) -> list[str]:
    r = result.get("roofline")
    if not r:
        return []
    rates = r["rates_gmacs"]
    libraries = sorted({lib for by in rates.values() for lib in by})
    table = _table(
        ["precision", *libraries, "peak"],
        [
            [p, *(by.get(lib, "—") for lib in libraries), f"**{max(by.values())}**"]
            for p, by in rates.items()
        ],
    )
    return [
        "## CPU roofline",
        "",
        f"Measured MatMul peak per precision, GMAC/s: {r['method']}.",
        "",
        *table,
        "",
        "MACs are counted from our fixed-size ONNX graph after shape inference (Conv, MatMul, "
        "Gemm), attention products included; 'of peak' is those MACs per second over the peak "
        "of the precision the row computes in (FP16 on a CPU: FP32's). Every backend is charged "
        "the same MACs.",
        "",
    ]


def _forward(result: dict[str, Any]) -> list[str]:
    rows = []
    fp32 = {
        (r["backend"], tuple(r["size"]), r["batch"]): r["stats"]["median_s"]
        for r in result.get("forward", [])
        if r["precision"] == "fp32"
    }
    for r in result.get("forward", []):
        st = r["stats"]
        base = fp32.get((r["backend"], tuple(r["size"]), r["batch"]))
        speedup = "—" if base is None else f"{base / st['median_s']:.2f}x"
        rows.append(
            [
                r["backend"],
                r["precision"],
                "{}x{}".format(*r["size"]),
                r["batch"],
                _ms(st["median_s"]),
                speedup,
                _ms(st["p90_s"]),
                _ms(st["p99_s"]),
                _ms(st["min_s"]),
                _ms(st["max_s"]),
                st["runs"],
                f"{r['throughput_mpix_s']:.3f}",
                r.get("gmacs", "—"),
                f"{100 * r['roofline_fraction']:.0f}%" if "roofline_fraction" in r else "—",
                f"{r['peak_rss_mb']:.0f} (+{r['rss_delta_mb']:.0f})",
                "—" if r.get("device_peak_mb") is None else f"{r['device_peak_mb']:.0f}",
            ]
        )
    header = [
        "backend",
        "precision",
        "LR size",
        "batch",
        "median ms",
        "vs fp32",
        "p90",
        "p99",
        "min",
        "max",
        "runs",
        "out MP/s",
        "GMACs",
        "of peak",
        "peak RSS MB (+during)",
        "device MB",
    ]
    out = [
        "## Forward pass",
        "",
        "Inputs prepared in host memory, outputs fetched to host; CUDA runs synchronised. "
        "Peak RSS: process VmHWM reset per configuration (/proc/self/clear_refs), "
        "'+during' is the rise above the RSS at the start of that configuration.",
        "",
    ]
    out += [*_table(header, rows), ""]
    for s in result.get("skipped", []):
        out.append(f"- skipped {s['config']}: {s['reason']}")
    return [*out, ""]


def _comparison(result: dict[str, Any]) -> list[str]:
    c = result.get("comparison")
    if not c:
        return []
    return _comparison_of(c, "## Ours", result)


def _cpu_text(cpu: dict[str, Any]) -> str:
    flags = cpu.get("cpu_flags")
    listed = "CPU flags not recorded" if flags is None else " ".join(flags) or "none of our flags"
    return f"{cpu['cpu_model']} ({listed})"


def _elsewhere(c: dict[str, Any], result: dict[str, Any]) -> str:
    """' on <CPU> (flags)' where `c` was measured on another kind of CPU than `result`."""
    from .machine import cpu_kind

    if not c.get("machine"):  # spliced before comparisons kept their machine: the report's own
        return ""
    if cpu_kind(c["machine"]) == cpu_kind(result["machine"]):
        return " on the same kind of machine"
    return f" on another machine, {_cpu_text(c['machine'])}"


def _comparison_of(c: dict[str, Any], heading: str, result: dict[str, Any]) -> list[str]:
    """One interleaved comparison; `heading` starts its title ("## Ours", "### <CPU>: ours")."""
    size = "{}x{}".format(*c["size"])
    rows = [
        [name, _ms(st["median_s"]), _ms(st["p90_s"]), _ms(st["min_s"]), st["runs"]]
        for name, st in c["stats"].items()
    ]
    verdict = _verdict(c["goals_met"])
    out = [
        f"{heading} vs plain export vs eager, {size} LR, interleaved",
        "",
        "One process, one input, contenders alternated every repetition. 'plain export' is our "
        "straightforward port (nn.Unfold/Fold, Python loop over attention runs) through a plain "
        "`torch.onnx.export(dynamo=True)`, and 'eager reference' the same port in eager PyTorch. "
        + (
            "The official code (IVIPLab/LBNet, imported from a checkout via --official-repo, "
            "not vendored) ran eager and plainly exported beside them; the goals are judged "
            "against it."
            if c.get("against") == "official code"
            else "They stand in for the official code (give --official-repo to time it)."
        )
        + (
            # runs before bench recorded it had the attention products alone in BF16
            " 'bf16-attn': OpenVINO with only "
            + c.get("bf16_attn_covers", "the attention products")
            + " in BF16, everything else FP32 (`--precision bf16-attn`)."
            if any(name.endswith("bf16-attn)") for name in c["stats"])
            else ""
        )
        + (
            f" Measured in a run of its own started {c['started']}{_elsewhere(c, result)}, "
            "with the MatMul peaks measured in that run: "
            + ", ".join(f"{k} {v}" for k, v in c["roofline"]["peaks_gmacs"].items())
            + " GMAC/s."
            if c.get("started") and c.get("roofline")
            else ""
        )
        + (f" {c['cpu_note']}" if c.get("cpu_note") else ""),
        "",
    ]
    out += [*_table(["contender", "median ms", "p90", "min", "runs"], rows), ""]
    out += [
        f"Speed-up of ours over the {c.get('against', 'straightforward port')}: "
        f"**{c['speedup_vs_eager']}x** vs eager (goal >= {c['goal_vs_eager']}x), "
        f"**{c['speedup_vs_plain']}x** vs its plain export (goal >= {c['goal_vs_plain']}x): "
        f"goals {verdict}.",
        "",
    ]
    out += _cpu_goals(c.get("cpu_goals"))
    # a comparison measured again later carries the peaks measured with it (peaks move by
    # the hour here: 155 and 201 GMAC/s FP32 on one machine, a day apart)
    out += _floor(c, c.get("roofline") or result.get("roofline"))
    profiles = [
        *((f"ORT profile, {n} (top ops by kernel time per run):", "op", p)
          for n, p in c.get("profile", {}).items()),
        *((f"OpenVINO profile, {n} (top node types by time per run, with the kernel OpenVINO "
           "ran each with: its ISA and library):", "node type (kernel)", p)
          for n, p in c.get("profile_openvino", {}).items()),
    ]  # fmt: skip
    for title, what, prof in profiles:
        rows = [
            [t["op"], t["seconds_per_run"], f"{100 * t['share']:.0f}%", t["nodes"]]
            for t in prof["top"]
        ]
        out += [title, "", *_table([what, "s per run", "share", "nodes"], rows), ""]
    return out


def _other_cpus(result: dict[str, Any]) -> list[str]:
    """Each other kind of CPU's latest comparison, after one table of every kind's."""
    others = result.get("other_cpus") or []
    if not others or not result.get("comparison"):
        return []
    c = result["comparison"]  # as bench wrote it, or spliced with its own run's facts
    above = c | {k: c.get(k) or result.get(k) for k in ("machine", "started", "roofline")}
    rows = [_kind_row(above), *(_kind_row(o) for o in others)]
    rows[0][0] = f"{rows[0][0]} (above)"
    out = [
        "## The comparison on other kinds of CPU",
        "",
        "The same interleaved comparison, each kind of CPU's latest run (`python -m "
        "lbnet_deploy.benchmarks.report --comparison FILE` keeps them), the one above first, "
        "then the others, oldest first: ratios hold within one run, so compare the ratios and "
        "fractions of peak across machines, not milliseconds. Peaks are that run's MatMul peaks "
        "(GMAC/s, 2 threads); the default and fastest paths are ours within 0.01 dB of FP32 "
        "(the CPU goals), with their ratio over the official code's plain export in ONNX "
        "Runtime and their fraction of the peak of the precision they compute in (none for "
        "bf16-attn, which computes in two); 'top kernel' is the fastest's first row in its "
        "profile.",
        "",
        *_table(
            [
                "CPU", "measured", "peak fp32 / bf16 / int8", "official plain export (ort)",
                "default path", "fastest", "top kernel of the fastest",
            ],
            rows,
        ),
        "",
    ]  # fmt: skip
    for c in others:
        out += _comparison_of(
            c, f"### {_cpu_text(c['machine'])}, {c['started'][:10]}: ours", result
        )
    return out


def _kind_row(c: dict[str, Any]) -> list[object]:
    """One kind of CPU in `_other_cpus`' table."""
    from .measure import OFFICIAL_PLAIN, OURS

    stats, fraction = c["stats"], c.get("fraction_of_peak", {})
    peaks = (c.get("roofline") or {}).get("peaks_gmacs", {})
    plain = stats.get(OFFICIAL_PLAIN)
    goals = c.get("cpu_goals")
    # before the CPU goals (OpenVINO) there was one path of ours: ONNX Runtime
    default, fastest = (goals["default"], goals["fastest"]) if goals else (OURS, OURS)

    def path(name: str) -> str:
        if name not in stats or not plain:
            return "—"
        ratio = plain["median_s"] / stats[name]["median_s"]
        share = f", {100 * fraction[name]:.0f}% of peak" if name in fraction else ""
        return f"{name}: {ratio:.2f}x{share}"

    profile = {**c.get("profile", {}), **c.get("profile_openvino", {})}.get(fastest)
    top = profile["top"][0] if profile else None
    return [
        _cpu_text(c["machine"]),
        c["started"][:10],
        " / ".join(str(peaks.get(p, "—")) for p in ("fp32", "bf16", "int8")),
        _ms(plain["median_s"]) + " ms" if plain else "—",
        path(default),
        path(fastest),
        f"{top['op']}, {100 * top['share']:.0f}%" if top else "—",
    ]


def _cpu_goals(g: dict[str, Any] | None) -> list[str]:
    """The CPU issue's goals, judged on this comparison."""
    if not g:
        return []
    r, goals, met = g["ratios"], g["goals"], g["met"]

    def judged(key: str) -> str:
        if r[key] is None:
            return f"not timed (goal >= {goals[key]}x)"
        return f"**{r[key]}x** (goal >= {goals[key]}x: {'met' if met[key] else 'missed'})"

    plain, plain_ov = g["against"]
    return [
        f"CPU goals. The default CPU path (as `--backend auto` picks it: ours on ONNX Runtime "
        f"unless another of ours at FP32 accuracy is 5% faster) is {g['default']} here: "
        f"{judged('default_vs_plain_ort')} against {plain}, "
        f"{judged('default_vs_plain_openvino')} against {plain_ov}. The fastest of ours is "
        f"{g['fastest']}: {judged('fastest_vs_plain_ort')} against {plain}. "
        f"FP32 accuracy: FP32, and {_counts(g['default_counts'], 'every checkpoint')}; "
        f"the fastest also counts {_counts(g['fastest_counts'], 'this model')}.",
        "",
    ]


def _counts(computes: list[str], where: str) -> str:
    if not computes:
        return f"no BF16 compute (none within 0.01 dB of FP32 on {where} in PRECISION.md)"
    return f"{' and '.join(computes)} (PRECISION.md: within 0.01 dB of FP32 on {where})"


ISSUE_FIGURES_128 = {"official eager": 1.862, "plain export": 0.569}  # the issue's, 128x128


def _issue_figures(c: dict[str, Any], gmacs: float, peak: float) -> str:
    """Set the issue's 128x128 anchors (taken on its author's machine) beside this machine."""
    from .measure import OFFICIAL_EAGER, OFFICIAL_PLAIN

    text = (
        "The issue's anchors at 128x128 (official eager 1862 ms, its plain export 569 ms) were "
        "taken on another machine"
    )
    here = {
        k: c["stats"][k]["median_s"] for k in (OFFICIAL_EAGER, OFFICIAL_PLAIN) if k in c["stats"]
    }
    if len(here) == 2:
        eager = here[OFFICIAL_EAGER] / ISSUE_FIGURES_128["official eager"]
        plain = here[OFFICIAL_PLAIN] / ISSUE_FIGURES_128["plain export"]
        return (
            f"{text}: here the same code takes {here[OFFICIAL_EAGER] * 1e3:.0f} ms eager "
            f"({eager:.1f}x theirs) and {here[OFFICIAL_PLAIN] * 1e3:.0f} ms plainly exported "
            f"({plain:.1f}x theirs), so compare ratios, not milliseconds. Their plain export ran "
            f"at {gmacs / ISSUE_FIGURES_128['plain export']:.0f} GMAC/s on these MACs; this "
            f"CPU's peak is {peak} GMAC/s."
        )
    need = gmacs / ISSUE_FIGURES_128["plain export"]
    return (
        f"{text}; their plain export implies {need:.0f} GMAC/s on these MACs, against this CPU's "
        f"peak of {peak} GMAC/s (give --official-repo to time the official code here)."
    )


def _core_bound(
    c: dict[str, Any], macs: dict[str, int] | None, roofline: dict[str, Any] | None
) -> list[str]:
    """Split each profile into the attention core and the rest, and say how fast the rest
    would have to run for the speed goal against the plain export."""
    from .measure import OURS, judged_against

    prof = c.get("profile", {})
    plain_name, _ = judged_against(prof)
    ours, plain = prof.get(OURS), prof.get(plain_name)
    if not (ours and plain and macs and roofline):
        return []
    peak = roofline["peak_gmacs"]
    other_gmacs = (macs["total"] - macs["MatMul_attention"]) / 1e9
    ours_rest = ours["kernel_s"] - ours["attention_core_s"]
    plain_rest = plain["kernel_s"] - plain["attention_core_s"]
    core = min(ours["attention_core_s"], plain["attention_core_s"])
    target = c["stats"][plain_name]["median_s"] / c["goal_vs_plain"]
    budget = target - core
    if budget > 0:
        need = other_gmacs / budget
        verdict = (
            f"everything else would have to fit in {budget:.3f} s, i.e. run at {need:.0f} GMAC/s"
            f" ({100 * need / peak:.0f}% of this CPU's peak; ours: {other_gmacs / ours_rest:.0f}"
            f" GMAC/s, {100 * other_gmacs / ours_rest / peak:.0f}%)."
        )
    else:
        verdict = "that core alone is already slower than the goal allows."
    return [
        "Where the time goes (ORT profiles below, kernel time per pass): the attention core "
        "(each Softmax and the q k^T and softmax(.) v products around it) takes "
        f"{ours['attention_core_s']:.3f} s of {ours['kernel_s']:.3f} s in ours and "
        f"{plain['attention_core_s']:.3f} s of {plain['kernel_s']:.3f} s in {plain_name}: the "
        "same arithmetic on the same ORT kernels (MLAS SGEMM and Softmax). "
        f"Everything else ({other_gmacs:.1f} GMACs: the CNN, the token linear layers, "
        f"LayerNorm, layout) takes {ours_rest:.3f} s in ours against {plain_rest:.3f} s there: "
        f"that is what our graph rewrites cut. For {c['goal_vs_plain']}x, a pass must take at "
        f"most {target:.3f} s; with the faster of the two attention cores ({core:.3f} s), "
        + verdict,
        "",
    ]


def _floor(c: dict[str, Any], roofline: dict[str, Any] | None) -> list[str]:
    """What the CPU's peak allows, and where the profiles say the time goes."""
    macs = c.get("macs")
    out: list[str] = []
    if macs and roofline and c.get("floor_s"):
        peak = roofline["peak_gmacs"]
        attn = macs["MatMul_attention"] / macs["total"]
        fractions = ", ".join(f"{k} {100 * v:.0f}%" for k, v in c["fraction_of_peak"].items())
        out.append(
            f"One forward pass is {macs['total'] / 1e9:.1f} GMACs ({100 * attn:.0f}% of them the "
            f"attention products); at the measured FP32 peak of {peak} GMAC/s no FP32 backend "
            f"can take less than {c['floor_s'] * 1e3:.0f} ms here. Fraction of the peak of the "
            f"precision each computes in (BF16, INT8: their own peaks above): {fractions}."
        )
        from .measure import judged_against

        eager = c["stats"].get(judged_against(c["stats"])[1])
        if eager:
            need = eager["median_s"] / c["goal_vs_eager"]
            where = "below" if need < c["floor_s"] else "above"
            out[-1] += (
                f" {c['goal_vs_eager']}x over the eager code needs {need * 1e3:.0f} ms, {where} "
                "that floor."
            )
        if c["size"] == [128, 128]:
            out += ["", _issue_figures(c, macs["total"] / 1e9, peak)]
        out.append("")
    out += _core_bound(c, macs, roofline)
    return out


def _paper(result: dict[str, Any]) -> list[str]:
    from lbnet_deploy.paper import RUNNING_TIME_X4

    measured = {r["row"]: r for r in result.get("paper", [])}
    backends = sorted({b for r in measured.values() for b in r["ours_s"]})
    header = ["row", "applications per stage", "paper s (x4, GPU not stated)"]
    header += [f"ours {b} s" for b in backends] + [f"ratio {b}" for b in backends]
    rows = []
    for i, (label, paper_s) in enumerate(RUNNING_TIME_X4.items()):
        r = measured.get(label, {})
        ours = r.get("ours_s", {})
        ratio = r.get("ratio_to_paper", {})
        rows.append(
            [label, i, paper_s]
            + [f"{ours[b]:.3f}" if b in ours else "—" for b in backends]
            + [f"{ratio[b]}x" if b in ratio else "—" for b in backends]
        )
    m = result["machine"]
    first: dict[str, Any] = next(iter(measured.values()), {})
    size = first.get("size")
    if not size:
        return [
            "## The paper's running times",
            "",
            "The paper reports 0.0401 s per x4 image for the released LBNet (TM-2), GPU not "
            "stated; run with --paper to time these rows here.",
            "",
            *_table(["row", "paper s (x4)"], [[k, v] for k, v in RUNNING_TIME_X4.items()]),
            "",
        ]
    where = "a {}x{} Set5 x4 LR image".format(*size)
    return [
        "## The paper's running times beside ours",
        "",
        f"The paper reports 0.0401 s per x4 image for the released LBNet (TM-2), on a GPU it "
        f"does not name. Ours: {result['model']} on {where}, {m['cpu_model']} CPU with "
        f"{m['threads_used']} threads (GPU: {m['gpu']['name'] if m['gpu'] else 'none'}). "
        "TM-k rows reuse the trained weights with each TransBlock applied k+1 times (timing "
        "only); 'without transformer' removes both transformer stages (no unfold/fold either). "
        "The paper's rows are LBNet (not -T) and likely a different image size, so the ratio "
        "is a hardware+model gap, not a like-for-like speed-up.",
        "",
        *_table(header, rows),
        "",
    ]


def _scaling(result: dict[str, Any], plot: str | None) -> list[str]:
    rows = []
    for r in result.get("scaling", []):
        size = f"{r['size']}x{r['size']}"
        if "stats" not in r:
            rows.append(
                [
                    r["mode"],
                    size,
                    r.get("tiles", "—"),
                    "skipped: " + r["skipped"],
                    "—",
                    "—",
                    "—",
                    "—",
                ]
            )
            continue
        macs = r["macs"]
        attn = macs.get("MatMul_attention")
        share = f"{100 * attn / macs['total']:.0f}%" if attn is not None else "—"
        rows.append(
            [
                r["mode"],
                size,
                r["tiles"],
                _ms(r["stats"]["median_s"]),
                f"{macs['total'] / 1e9:.1f}",
                share,
                f"{r['throughput_mpix_s']:.3f}",
                f"{r['rss_delta_mb']:.0f}",
            ]
        )
    if not rows:
        return []
    tiled: dict[str, Any] = next((r for r in result["scaling"] if "tile" in r), {})
    tile, overlap = tiled.get("tile", "?"), tiled.get("overlap", "?")
    header = [
        "mode",
        "LR size",
        "tiles",
        "median ms",
        "GMACs",
        "attention share of MACs",
        "out MP/s",
        "peak RSS rise MB",
    ]
    out = [
        "## Scaling with input size (ORT CPU, ours)",
        "",
        f"Whole image: one fixed-size graph per size. Tiled: the {tile}x{tile} graph through the "
        f"Upscaler (overlap {overlap}, feather merge), i.e. what `upscale` does for large images. "
        "Attention MACs grow as N^2/16 and overtake the CNN and linear layers where the "
        "'attention share' passes 50%.",
        "",
    ]
    out += [*_table(header, rows), ""]
    out += _tiled_vs_whole(result["scaling"])
    if plot:
        out += [f"![latency and memory vs input size]({plot})", ""]
    return out


TILED_GOAL = 2.0  # the issue's: tiled `upscale` >= 2x faster than the whole image from 256x256


def _tiled_vs_whole(scaling: list[dict[str, Any]]) -> list[str]:
    """Speed-up of the tiled path over the whole-image graph at each size both ran."""
    timed = {(r["mode"], r["size"]): r["stats"]["median_s"] for r in scaling if "stats" in r}
    pairs = [
        (n, timed[("whole", n)] / timed[("tiled", n)])
        for (mode, n) in sorted(timed)
        if mode == "tiled" and ("whole", n) in timed
    ]
    if not pairs:
        return []
    text = ", ".join(f"{n}x{n}: {ratio:.2f}x" for n, ratio in pairs)
    big = [ratio for n, ratio in pairs if n >= 256]
    verdict = f"goal (>= {TILED_GOAL}x from 256x256) " + (
        "met" if big and min(big) >= TILED_GOAL else "**missed**" if big else "not measured"
    )
    return [f"Tiled speed-up over the whole image at the same size: {text}; {verdict}.", ""]


def _end_to_end(result: dict[str, Any]) -> list[str]:
    e = result.get("end_to_end")
    if not e:
        return []
    st = e["stats"]
    return [
        "## End-to-end upscale",
        "",
        f"`upscale` of {e['images']} images in {e['dataset']} ({e['backend']}, runtime defaults: "
        f"dynamic graph, whole image within the 2 GiB budget, PNG decode and encode included): "
        f"median {st['median_s']:.2f} s per pass (p90 {st['p90_s']:.2f}, min {st['min_s']:.2f}, "
        f"{st['runs']} runs), {e['images_per_s']} images/s, {e['throughput_mpix_s']} output MP/s,"
        f" peak RSS {e['peak_rss_mb']:.0f} MB (+{e['rss_delta_mb']:.0f}).",
        "",
    ]


def _verdict(met: bool) -> str:
    """How RESULTS.md judges a goal."""
    return "met" if met else "**missed**"


def _pipeline(result: dict[str, Any]) -> list[str]:
    pl = result.get("pipeline")
    if not pl:
        return []
    h, w = pl["image"]
    rows = [
        [r["batch"], r["batches"], r["in_flight"], r["mpix_s"]["overlapped"],
         r["mpix_s"]["serial"], _ms(r["stats"]["overlapped"]["median_s"]),
         _ms(r["stats"]["serial"]["median_s"])]
        for r in pl["no_device"]
    ]  # fmt: skip
    last, o, wr = pl["no_device"][-1], pl["overlap"], pl["writes"]
    header = ["batch", "batches", "in flight", "MP/s in flight", "MP/s one at a time"]
    header += ["ms in flight", "ms one at a time"]

    st = o["stats"]
    return [
        "## Host pipeline (a stand-in device: `bench --backend null`)",
        "",
        f"`upscale` of a {h}x{w} photo-like image (x{pl['scale']}: {pl['output_mpix']} MP out, "
        f"{pl['tile']}x{pl['tile']} tiles, overlap {pl['overlap_px']}) through the TensorRT "
        "runner's host side over a device that takes a set time per batch (runtime/null.py): "
        "how fast the host tiles, batches, merges and rounds, with batches in flight ahead of "
        "the merge (the product's path) and one at a time, interleaved. With no device time:",
        "",
        *_table(header, rows),
        "",
        f"Goal >= {pl['goal_mpix_s']:.0f} output MP/s at batch {last['batch']}: "
        f"{last['mpix_s']['overlapped']} MP/s, {_verdict(pl['goal_mpix_s_met'])}.",
        "",
        f"With a device as slow as the host: {o['device_ms']} ms per batch (the measured host "
        f"time per batch at batch {o['batch']}; {o['batches']} batches: {o['device_s']:.3f} s "
        f"beside {o['host_s']:.3f} s of host work), in flight "
        f"{st['overlapped']['median_s']:.3f} s = {o['ratio']} x (host + device), one at a time "
        f"{st['serial']['median_s']:.3f} s = {o['serial_ratio']} x; goal <= {o['goal']}: "
        f"{_verdict(o['met'])}.",
        "",
        f"PNG writes: `upscale` of {wr['images']} such images at that device time took "
        f"{wr['stats']['behind']['median_s']:.2f} s with each PNG written while the next image "
        f"runs, {wr['stats']['in_turn']['median_s']:.2f} s writing in turn ({wr['ratio']}x).",
        "",
    ]


def _serving(result: dict[str, Any]) -> list[str]:
    t = result.get("triton")
    if not t:
        return []
    lat, here = t["triton_latency"] or {}, t["inprocess_latency"]
    verdict = _verdict(t["met"])
    batches = ", ".join(f"{n} x {b}" for b, n in t["tile_batches"].items()) or "none"
    rounds = ", ".join(f"{r['ratio']:.2f}" for r in t["rounds"])
    return [
        "## Serving through Triton",
        "",
        f"`bench --backend triton`: {t['clients']} concurrent clients, each sending the "
        f"{t['images']} images of {t['dataset']} as whole uint8 images to the image model "
        f"(server: {t['server']}; Python-backend tile model on ONNX Runtime, the same graph), "
        "against in-process `upscale` (the Upscaler) of the same requests one after the other on "
        f"the same backend; {len(t['rounds'])} rounds, each Triton then in-process, on one "
        "machine (arrays in and out on both sides: no PNG decode or encode).",
        "",
        *_table(
            ["", f"Triton, {t['clients']} clients", "in-process"],
            [
                [
                    "images/s (median of rounds)",
                    f"{t['triton_images_per_s']:.2f}",
                    f"{t['inprocess_images_per_s']:.2f}",
                ],
                ["latency p50", _ms(lat.get("median_s")), _ms(here["median_s"])],
                ["latency p99", _ms(lat.get("p99_s")), _ms(here["p99_s"])],
            ],
        ),
        "",
        f"Throughput through Triton: {t['ratio_median']:.2f}x in-process (per round: "
        f"{rounds}); goal >= {t['goal']}x: "
        f"{verdict}. Outputs differing from in-process: {t['mismatches']}, errors: "
        f"{t['errors']}. Tile-model executions by batch size: {batches}.",
        "",
    ]


def render(result: dict[str, Any], plot: str | Path | None = None) -> str:
    """The whole RESULTS.md text; `plot` is the figure's path relative to the Markdown file."""
    plot_text = str(plot) if plot else None
    lines = [
        f"# lbnet-deploy benchmark results: {result['model']}",
        "",
        f"Regenerate (20-30 minutes on 2 cores): `{REGENERATE} [--official-repo DIR]`"
        + (
            " (this copy: with a checkout of IVIPLab/LBNet)"
            if (result.get("comparison") or {}).get("against") == "official code"
            else ""
        ),
        "",
    ]
    if result.get("note"):
        lines += [f"> {result['note']}", ""]
    for part in (
        _machine(result),
        _roofline(result),
        _forward(result),
        _comparison(result),
        _other_cpus(result),
        _paper(result),
        _scaling(result, plot_text),
        _pipeline(result),
        _end_to_end(result),
        _serving(result),
    ):
        lines += part
    return "\n".join(lines).rstrip() + "\n"
