"""Markdown tables from benchmark JSON, and the doc section they replace (between markers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import median
from bench.speed import INFER_STEPS_FACTOR

DOC_START = "<!-- bench:tables:start -->"
DOC_END = "<!-- bench:tables:end -->"

# --------------------------------------------------------------------------- report


def _fmt(x: Any, nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def markdown(result: dict[str, Any]) -> str:
    """The markdown tables of a result file (what docs/benchmarks.md shows)."""
    out = []
    m = result.get("machine", {})
    st = result.get("settings", {})
    out.append(
        f"Machine: {m.get('cpu')} ({m.get('usable_cores')} cores, "
        f"{', '.join(m.get('cpu_flags', []))}), TensorFlow {m.get('tensorflow')}, "
        f"Keras {m.get('keras')}, oneDNN {m.get('onednn')}, threads intra/inter "
        f"{m.get('intra_op_threads')}/{m.get('inter_op_threads')} (0 = default). "
        f"Input {st.get('input_size')}, batch {st.get('batch')}, {st.get('num_classes')} class, "
        f"loss `{st.get('loss')}`, {st.get('optimizer')}; medians of {st.get('timed_steps')} "
        f"timed training steps (inference: x{INFER_STEPS_FACTOR}) "
        f"after {st.get('warmup_steps')} warm-up. Load average (1/5/15 min) at "
        f"start {result.get('load_start')}, at end {result.get('load_end')}; "
        f"git {m.get('git_commit')}, {result.get('date')}.\n"
    )
    thr = result.get("throughput")
    flops = result.get("flops") or {}
    eff = {(e["model"], e["precision"], e["xla"]): e for e in flops.get("efficiency", [])}
    if thr:
        out.append(
            "| model | precision | XLA | train img/s | infer img/s | train GFLOP/s | "
            "% of matmul peak |\n|---|---|---|---:|---:|---:|---:|"
        )
        for r in thr["rows"]:
            xla = "on" if r["xla"] else "off"
            if "error" in r:
                out.append(f"| {r['model']} | {r['precision']} | {xla} | error | | | |")
                continue
            e = eff.get((r["model"], r["precision"], r["xla"]), {})
            out.append(
                f"| {r['model']} | {r['precision']} | {xla} | {r['train_img_s']:.2f} | "
                f"{r['infer_img_s']:.2f} | {_fmt(e.get('train_gflop_s'), 0)} | "
                f"{_fmt(e.get('train_pct_of_peak'), 0)} |"
            )
        out.append("")
    if flops:
        peaks = ", ".join(
            f"{p}: {v['flops_per_s'] / 1e9:.0f} GFLOP/s" for p, v in flops["peak"].items()
        )
        out.append(
            f"Measured matmul peak ({flops['peak'][next(iter(flops['peak']))]['n']}² "
            f"`tf.matmul`): {peaks}.\n"
        )
        out.append(
            "| model | params (M) | forward GFLOP/img (conv+matmul) | all ops | "
            "train GFLOP/img (3x) |\n|---|---:|---:|---:|---:|"
        )
        for e in flops["models"]:
            out.append(
                f"| {e['model']} | {e['params'] / 1e6:.2f} | {e['forward_gflop_per_img']:.2f} | "
                f"{e['forward_gflop_per_img_all_ops']:.2f} | {e['train_gflop_per_img']:.2f} |"
            )
        out.append("")
    ov = result.get("overhead")
    if ov:
        out.append(
            "| loss wrapper (unet, float32) | XLA | attach s/step | plain s/step | overhead "
            "| rounds |\n|---|---|---:|---:|---:|---:|"
        )
        for r in ov["rows"]:
            out.append(
                f'| `attach(model, "wbce+dice")` vs `compile(loss=...)` + sample_weight | '
                f"{'on' if r['xla'] else 'off'} | {r['attach_step_s']:.3f} | "
                f"{r['plain_step_s']:.3f} | {r['overhead_pct']:+.1f}% | {r['rounds']} |"
            )
        out.append("")
    pl = result.get("pipeline")
    if pl:
        out.append(
            "| pipeline | image size, batch | tf.data img/s | PyDataset img/s | "
            "training img/s (unet f32) | tf.data / training |\n|---|---|---:|---:|---:|---:|"
        )
        for c in pl["cases"]:
            size = c["config"]["image_size"]
            py = c.get("pydataset", {}).get("img_s")
            out.append(
                f"| {c['case']} | {size[0]}x{size[1]}, {c['batch']} | "
                f"{c['tf_data']['img_s']:.0f} | {_fmt(py, 0)} | {c['train_img_s']:.2f} | "
                f"{c['tf_data_x_train']:.0f}x |"
            )
        out.append("")
    mem = result.get("memory")
    if mem:
        out.append("| model | peak RSS training (MiB) | after import (MiB) |\n|---|---:|---:|")
        for r in mem["rows"]:
            if "error" in r:
                out.append(f"| {r['model']} | error | |")
            else:
                out.append(
                    f"| {r['model']} | {r['peak_rss_mib']:.0f} | {r['import_rss_mib']:.0f} |"
                )
        out.append("")
    return "\n".join(out)


# our precision -> (smp_reference.py's row, how the smp side ran)
REFERENCE_PRECISION = {
    "float32": ("float32", "float32, channels-last"),
    "mixed_bfloat16": ("bfloat16_autocast", "bfloat16 autocast"),
}


def reference_markdown(result: dict[str, Any], ref: dict[str, Any]) -> str:
    """Our U-Net rows next to `bench/smp_reference.py`'s, as ratios (ours / smp)."""
    ours = {
        r["precision"]: r
        for r in result.get("throughput", {}).get("rows", [])
        if r["model"] == "unet" and not r["xla"] and "error" not in r
    }
    theirs = {r["precision"]: r for r in ref.get("rows", [])}
    out = [
        f"Against segmentation_models_pytorch {ref.get('segmentation_models_pytorch')} "
        f"(torch {ref.get('torch')}, {ref.get('threads')} threads) on this machine, "
        f"`python -m bench.smp_reference`, {ref.get('date')}, load {ref.get('load_start')} -> "
        f"{ref.get('load_end')}; U-Net ResNet-34, {ref.get('size')}x{ref.get('size')}, "
        f"batch {ref.get('batch')}:\n",
        "| ours vs smp | train img/s | smp train | ratio | infer img/s | smp infer | "
        "ratio |\n|---|---:|---:|---:|---:|---:|---:|",
    ]
    for precision, (theirs_name, how) in REFERENCE_PRECISION.items():
        a, b = ours.get(precision), theirs.get(theirs_name)
        if a is None or b is None:
            continue
        out.append(
            f"| {precision} vs {how} | {a['train_img_s']:.2f} | {b['train_img_s']:.2f} | "
            f"{a['train_img_s'] / b['train_img_s']:.2f}x | {a['infer_img_s']:.2f} | "
            f"{b['infer_img_s']:.2f} | {a['infer_img_s'] / b['infer_img_s']:.2f}x |"
        )
    out.append("")
    return "\n".join(out)


def head_to_head_markdown(entries: list[dict[str, Any]]) -> str:
    """`bench/tune.py --variants default smp` runs (a list of them, one per model and
    precision): the zoo and smp stepped in turn, ratio = median over rounds of smp's time /
    ours. One table per model (entries without a `model` are U-Net runs)."""
    groups: dict[tuple[str, str], list[str]] = {}
    versions: dict[str, Any] = {}
    for e in entries:
        by = {r["variant"]: r for r in e.get("rows", [])}
        if "default" not in by or "smp" not in by:
            continue
        ours, smp = by["default"], by["smp"]
        cells = [f"{e['precision']}", f"{e['rounds']}"]
        for kind in ("train", "infer"):
            pairs = zip(smp[f"{kind}_times_s"], ours[f"{kind}_times_s"])
            ratio = median([a / b for a, b in pairs])
            cells += [
                f"{ours[f'{kind}_img_s']:.2f}",
                f"{smp[f'{kind}_img_s']:.2f}",
                f"{ratio:.2f}x",
            ]
        cells.append(f"{e.get('date', '')}, load {e.get('load_start')} -> {e.get('load_end')}")
        key = (e.get("model", "unet"), e.get("smp_arch") or "Unet")
        groups.setdefault(key, []).append("| " + " | ".join(cells) + " |")
        versions = smp.get("versions", {})
    if not groups:
        return ""
    out = [
        "Head to head, `python -m bench.tune --variants default smp` (each zoo model and its "
        f"counterpart in smp {versions.get('segmentation_models_pytorch', '?')} on torch "
        f"{versions.get('torch', '?')}, ResNet-34, in separate processes, stepped in turn "
        "A B B A; smp float32 in channels-last memory format, bfloat16 under autocast for "
        "mixed_bfloat16; ratio = median over rounds of smp's step time / ours):\n"
    ]
    for (model, arch), rows in groups.items():
        out += [
            f"`{model}` vs smp `{arch}`:\n",
            "| precision | rounds | ours train img/s | smp train | ratio | ours infer img/s | "
            "smp infer | ratio | when |\n|---|---:|---:|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
        ]
    return "\n".join(out)


def update_doc(doc: Path, tables: str, start: str = DOC_START, end: str = DOC_END) -> None:
    """Replace the text between the markers `start` and `end` of `doc` with `tables`."""
    text = doc.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{doc} has no '{start}' / '{end}' markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{tables.rstrip()}\n{end}{tail}")
