"""Real-data quality table: foreground Dice after 1, 3 and 10 CPU-minutes of training.

For each dataset of bench/quality_data.py and each budget, three recipes, median of 3 seeds:

- default:  `python train.py data=folder data.root=R` as a new user ran it before recipe=auto
            (256x256 resize, the default U-Net/ResNet-34, hflip, one validation per pass over
            the data), with `trainer.time_budget=<B>s`;
- auto:     `recipe=auto trainer.time_budget=<B>s`: the recipe planned by zoo.recipe from the
            data's fingerprint, steps / validation interval / LR schedule from the budget;
- baseline: the textbook U-Net of bench/quality_baseline.py, same budget.

Every train.py run gets `trainer.time_budget=<B>s` (the training loop: steps, validations,
checkpoint and backup writes). `--calibrated` sizes runs the way this script did before the
trainer had a budget: short calibration runs (1 epoch of n1 and of n2 steps) give the per-step
time t and the fixed cost c0 (first-step tracing, first validation) of `train_time_s`, a third
(2 epochs) the cost of an epoch end, and the runs get epochs / steps_per_epoch from them. Every
model is scored by `evaluate_native` on the validation images at their stored resolution.

Budgets are training-loop seconds (`train_time_s`); each process is pinned to `--cores` CPUs.
JSON to bench/results/quality.json, table into docs/quality.md between the quality markers.

    python -m bench.quality                                  # the full matrix (hours)
    python -m bench.quality --datasets dsb2018_nuclei --budgets 60 --seeds 0 --out /tmp/q.json
    python -m bench.quality --smoke --out /tmp/q.json        # seconds-scale plumbing check
    python -m bench.quality report bench/results/quality.json --doc docs/quality.md
    python -m bench.quality report part1.json part2.json --doc docs/quality.md   # merged
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("default", "auto", "baseline")
from bench.common import write_json  # noqa: E402
from bench.report import update_doc  # noqa: E402


def markers(section: str) -> tuple[str, str]:
    """The doc markers of a table section: "tables" is the main table of docs/quality.md."""
    return f"<!-- quality:{section}:start -->", f"<!-- quality:{section}:end -->"


DOC_START, DOC_END = markers("tables")
# What makes two machines' Dice at equal time incomparable: the CPU's vector units (TensorFlow
# uses oneDNN only with AVX-512) and whether oneDNN ran.
# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) makes another kind of machine out of the same CPU.
MACHINE_KEYS = ("cpu_flags", "onednn", "ONEDNN_MAX_CPU_ISA")
QUIET = ["trainer.tensorboard=false", "trainer.num_overlays=0", "trainer.verbose=0"]
# The earlier folder defaults, pinned for the "default" recipe (they are not the defaults now).
PREVIOUS_DEFAULT = ["data.image_size=[256,256]", "data.resize=resize"]
# --smoke checks the plumbing only: tiny models and inputs, whatever the recipe.
SMOKE_ARGS = [
    "++model.encoder=resnet18",
    "++model.encoder_kwargs={base_width:8}",
    "++model.decoder_channels=[16,16,8,8,8]",
    "++data.image_size=[64,64]",
]


def _pin(cores: int):
    def preexec() -> None:  # same CPUs for every run, whatever the machine has
        cpus = sorted(os.sched_getaffinity(0))[:cores]
        os.sched_setaffinity(0, cpus)

    return preexec


def _env(cores: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    env.update(TF_NUM_INTRAOP_THREADS=str(cores), TF_NUM_INTEROP_THREADS=str(cores))
    return env


def train_py(args: list[str], run_dir: Path, cores: int) -> tuple[dict[str, Any], float]:
    """Run train.py with `args`; (metrics.json, wall seconds)."""
    cmd = [sys.executable, str(ROOT / "train.py"), *args, *QUIET, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=_env(cores), preexec_fn=_pin(cores)
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(args)} failed: {proc.stderr.strip()[-1500:]}")
    return json.loads((run_dir / "metrics.json").read_text()), wall


def calibrate(args: list[str], work: Path, cores: int, n1: int, n2: int) -> dict[str, float]:
    """Seconds per step t, fixed cost c0 of train_time_s and the cost of one epoch end, from
    runs of 1 epoch x n1 steps, 1 epoch x n2 steps and 2 epochs x n1 steps.

    The epoch end (validation, best checkpoint, backup) is what a validation costs in the
    trainer. The fixed cost (tracing, first validation) is 10-30 s against a fraction of a
    second per step, so a load change between runs can swamp their difference: a result that
    puts more than 90% of the longer run into the fixed cost is measured again (then bounded).
    """

    def timed(epochs: int, steps: int) -> float:
        run = work / f"calib{epochs}x{steps}"
        sized = [f"trainer.epochs={epochs}", f"trainer.steps_per_epoch={steps}"]
        m, _ = train_py([*args, *sized], run, cores)
        shutil.rmtree(run, ignore_errors=True)
        return float(m["train_time_s"])

    for _attempt in range(2):
        times = [timed(1, n1), timed(1, n2)]
        t = (times[1] - times[0]) / (n2 - n1)
        if t >= 0.1 * times[1] / n2:
            break
    t = max(t, 0.1 * times[1] / n2)
    times.append(timed(2, n1))
    epoch_end = max(times[2] - times[0] - n1 * t, 0.0)
    return {
        "step_s": t,
        "fixed_s": max(times[0] - n1 * t, 0.0),
        "epoch_end_s": epoch_end,
        "runs_s": times,
    }


def _count(root: Path, split: str) -> int:
    return len(list((root / split / "images").iterdir()))


def size_default(budget: float, cal: dict[str, float], n_train: int, n_val: int, batch: int):
    """Epochs of the previous default (one pass per epoch, a validation per epoch) that fit."""
    t, c0 = cal["step_s"], cal["fixed_s"]
    spe = max(1, n_train // batch)
    v = cal.get("epoch_end_s", 0.4 * t * math.ceil(n_val / batch))
    epochs = max(1, int((budget - c0 + v) // (spe * t + v)))
    return [f"trainer.epochs={epochs}"], {"epochs": epochs, "steps_per_epoch": spe}


def size_auto(budget: float, cal: dict[str, float], n_val: int, batch: int):
    """Steps, validation interval and LR warm-up from zoo.recipe.budget.plan_steps."""
    from zoo.recipe import plan_steps

    t, c0 = cal["step_s"], cal["fixed_s"]
    v = cal.get("epoch_end_s", 0.4 * t * math.ceil(n_val / batch))
    steps, every, _, warmup = plan_steps(budget - c0, t, v)
    steps = max(steps, 1)
    epochs = max(1, math.ceil(steps / every))
    every = min(every, steps)
    args = [f"trainer.epochs={epochs}", f"trainer.steps_per_epoch={every}"]
    return [*args, f"trainer.warmup_steps={warmup}"], {"epochs": epochs, "steps_per_epoch": every}


def run_one(
    dataset: str, root: Path, recipe: str, budget: float, seed: int, opts: argparse.Namespace
) -> dict[str, Any]:
    """One cell of the matrix; returns the record stored in the JSON."""
    from bench.quality_baseline import evaluate_native
    from bench.quality_data import SOURCES

    k = SOURCES[dataset].num_classes if dataset in SOURCES else 1
    rec: dict[str, Any] = {"dataset": dataset, "recipe": recipe, "budget_s": budget, "seed": seed}
    scale = getattr(opts, "time_scale", 1.0)
    if scale != 1:  # the budget the run gets; budget_s stays the nominal one
        rec["time_scale"], budget = scale, budget * scale
    work = Path(tempfile.mkdtemp(prefix=f"q_{dataset}_{recipe}_"))
    try:
        if recipe == "baseline":
            out = work / "baseline.json"
            cmd = [sys.executable, "-m", "bench.quality_baseline", "--root", str(root)]
            cmd += ["--budget", str(budget), "--seed", str(seed), "--out", str(out)]
            cmd += ["--num-classes", str(k)]
            start = time.perf_counter()
            proc = subprocess.run(
                cmd, capture_output=True, text=True, cwd=ROOT, env=_env(opts.cores),
                preexec_fn=_pin(opts.cores),
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(f"baseline failed: {proc.stderr.strip()[-1500:]}")
            rec.update(json.loads(out.read_text()), wall_s=round(time.perf_counter() - start, 1))
            return rec
        base = ["data=folder", f"data.root={root}", f"seed={seed}"]
        base += [f"data.num_classes={k}"] if k > 1 else []
        resize_to = None
        n_train, n_val = _count(root, "train"), _count(root, "val")
        if recipe == "default":
            batch, resize_to = 8, [256, 256]
            # (smoke runs pin a tiny size of their own)
            base += [a for a in PREVIOUS_DEFAULT if not (opts.smoke and "image_size" in a)]
        if not opts.calibrated:
            sized = [f"trainer.time_budget={budget:g}s"]
            if recipe == "auto":
                sized.append("recipe=auto")
            else:  # one validation per pass over the data, as the earlier default did
                sized.append(f"trainer.val_every_steps={max(1, n_train // batch)}")
            info: dict[str, Any] = {}
        else:
            if recipe == "auto":
                from zoo.recipe import fingerprint_folder, plan_recipe

                fp = fingerprint_folder(root, num_classes=k)
                plan = plan_recipe(fp, budget_s=budget, cores=opts.cores)
                base += plan.hydra_args()
                batch = int(plan.get("data.batch_size"))
                rec["recipe_args"] = plan.hydra_args()
            cal = opts.assume or calibrate(base, work, opts.cores, *opts.calibration_steps)
            rec["calibration"] = cal
            if recipe == "auto":
                sized, info = size_auto(budget, cal, n_val, batch)
            else:
                sized, info = size_default(budget, cal, n_train, n_val, batch)
        sized += opts.set  # a variant under test (--set): appended, so it wins
        if opts.smoke:
            sized += SMOKE_ARGS
            resize_to = [64, 64] if resize_to else None
        rec.update(info, args=[*base, *sized])
        metrics, wall = train_py([*base, *sized], work / "run", opts.cores)
        import keras

        import zoo  # noqa: F401  (registers the models for loading)

        model = keras.saving.load_model(work / "run" / "model.keras")
        rec["dice"] = round(evaluate_native(model, root, resize_to), 4)
        from zoo.inference.tta import model_tta

        tta = model_tta(model)
        if tta != "none":  # the share of the model's test-time augmentation in its score
            rec["tta"] = tta
            rec["dice_without_tta"] = round(evaluate_native(model, root, resize_to, "none"), 4)
        rec["app_val_dice"] = metrics.get("val_dice")
        rec["train_time_s"] = metrics.get("train_time_s")
        rec["wall_s"] = round(wall, 1)
        rec["params"] = metrics.get("params")
        rec["steps"] = metrics.get("steps")
        if "budget" in metrics:
            keys = ("used_s", "stop", "step_time_s", "validation_s")
            rec["budget"] = {k: metrics["budget"].get(k) for k in keys}
        rec["timing"] = metrics.get("timing")  # where the wall time outside training went
        applied = work / "run" / "recipe.json"
        if applied.exists():
            rec["recipe_applied"] = json.loads(applied.read_text())["applied"]
        spe = (metrics.get("length") or {}).get("interval") or info.get("steps_per_epoch", 1)
        last = metrics.get("steps") or 10**9
        hist = metrics.get("history", {}).get("val_dice", [])
        rec["curve"] = [[min((i + 1) * spe, last), round(float(d), 4)] for i, d in enumerate(hist)]
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- report


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median Dice per (dataset, recipe, budget) over seeds."""
    cells: dict[tuple, list[float]] = {}
    ratios: dict[tuple, list[float]] = {}
    for r in runs:
        if "dice" in r:
            key = (r["dataset"], r["recipe"], r["budget_s"])
            cells.setdefault(key, []).append(r["dice"])
            given = r["budget_s"] * r.get("time_scale", 1.0)
            ratios.setdefault(key, []).append(float(r.get("train_time_s") or 0) / given)
    out: dict[str, Any] = {}
    for (d, rec, b), values in sorted(cells.items()):
        cell = {"median": round(statistics.median(values), 4), "n": len(values)}
        # Runs sized by calibration can miss the budget (a loaded machine): flag, never hide.
        cell["time_ratio"] = round(statistics.median(ratios[(d, rec, b)]), 2)
        out.setdefault(d, {}).setdefault(rec, {})[f"{b:g}"] = cell
    return out


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several parts of the matrix (run separately): runs concatenated, the
    summary recomputed; a (dataset, recipe, budget, seed) measured twice keeps the later."""
    kinds = {tuple(map(str, (p.get("machine", {}).get(k) for k in MACHINE_KEYS))) for p in results}
    if len(kinds) > 1:
        raise SystemExit(
            f"the parts were measured on different machines ({', '.join(MACHINE_KEYS)}: "
            f"{sorted(kinds)}): their times are not comparable, report them separately"
        )
    variants = {
        (
            tuple(p.get("settings", {}).get("overrides") or ()),
            p.get("settings", {}).get("time_scale", 1.0),
        )
        for p in results
    }
    if len(variants) > 1:
        raise SystemExit(
            f"the parts were run with different --set overrides or --time-scale "
            f"({sorted(variants)}): "
            "they measure different recipes, report them separately"
        )
    merged = {**results[0], "datasets": {}, "runs": []}
    seen: dict[tuple, int] = {}
    for part in results:
        merged["datasets"].update(part.get("datasets", {}))
        for r in part.get("runs", []):
            key = (r["dataset"], r["recipe"], r["budget_s"], r["seed"])
            if key in seen:
                merged["runs"][seen[key]] = r
            else:
                seen[key] = len(merged["runs"])
                merged["runs"].append(r)
    merged["summary"] = summarize(merged["runs"])
    if len(results) > 1:
        merged["parts"] = [
            {k: p.get(k) for k in ("settings", "load_start", "load_end")} for p in results
        ]
    return merged


def markdown(result: dict[str, Any]) -> str:
    from bench.quality_curves import curves_markdown
    from bench.quality_data import SOURCES

    summary = result["summary"]
    budgets = sorted({float(b) for d in summary.values() for r in d.values() for b in r})
    head = " | ".join(f"{b / 60:g} min" for b in budgets)
    ns = [c["n"] for d in summary.values() for r in d.values() for c in r.values()]
    counts, most = set(ns), max(ns, default=0)
    seeds = (
        f"median of {counts.pop()} seeds"
        if len(counts) == 1
        else "median over seeds; (n) = seeds where not all were run"
    )
    lines = [
        f"Foreground Dice on the validation split ({seeds}), "
        f"{result['settings']['cores']} CPU cores, budgets of training-loop time; "
        "multi-class sets: the mean of their foreground classes' Dice."
        + (
            f" Variant: {' '.join(result['settings']['overrides'])} on every default and auto run."
            if result["settings"].get("overrides")
            else ""
        )
        + (
            f" Budgets emulated: each run trained for {scale:g}x the budget shown "
            "(--time-scale), the steps a CPU that much slower gets in the budget shown."
            if (scale := result["settings"].get("time_scale", 1.0)) != 1
            else ""
        ),
        "",
        f"| dataset | domain | recipe | {head} |",
        "|---|---|---|" + "---|" * len(budgets),
    ]
    for d, recipes in summary.items():
        src = SOURCES[d]
        for rec in RECIPES:
            if rec not in recipes:
                continue
            cells = [recipes[rec].get(f"{b:g}", {}) for b in budgets]
            vals = " | ".join(
                "-"
                if c.get("median") is None
                else f"{100 * c['median']:.1f}"
                + ("*" if abs(c["time_ratio"] - 1) > 0.3 else "")
                + (f" ({c['n']})" if c["n"] < most else "")
                for c in cells
            )
            name = d + {"stand-in": " (stand-in)", "excluded": " (excluded)"}.get(src.kind, "")
            lines.append(f"| {name} | {src.domain} | {rec} | {vals} |")
    lines += ["", "\\* training time off the budget by more than 30% (median over seeds).", "",
              "Targets (real datasets): auto at 3 min >= max(baseline, default) + 1 point, "
              "and within 1 point of auto at 10 min.", ""]  # fmt: skip
    for d, recipes in summary.items():
        if SOURCES[d].kind != "real" or "auto" not in recipes:
            continue
        a3 = recipes["auto"].get("180", {}).get("median")
        a10 = recipes["auto"].get("600", {}).get("median")
        others = [recipes.get(r, {}).get("180", {}).get("median") for r in ("baseline", "default")]
        if a3 is None or None in others:
            lines.append(f"- {d}: not measured at 3 min")
            continue
        beat = a3 >= max(others) + 0.01
        near = "not measured" if a10 is None else ("met" if a10 - a3 <= 0.01 else "missed")
        # Two decimals: a margin of 0.96 points must not read as 94.9 vs 93.9.
        at10 = "" if a10 is None else f" ({100 * a10:.2f})"
        lines.append(
            f"- {d}: beats both by 1 point: {'met' if beat else 'missed'} "
            f"({100 * a3:.2f} vs {100 * max(others):.2f}, {100 * (a3 - max(others)):+.2f}); "
            f"within 1 point of 10 min: {near}{at10}"
        )
    real = [d for d in summary if SOURCES[d].kind == "real"]
    curves = curves_markdown(result.get("runs", []), budget_s=180.0, real=real)
    if curves:
        lines += ["", "Learning curves at 3 minutes (every seed):", "", curves]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", default="run", choices=("run", "report"))
    p.add_argument(
        "result", nargs="*", type=Path, help="report: the JSON(s) to render (runs are merged)"
    )
    p.add_argument("--datasets", nargs="+", default=None)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    p.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")], default=None)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--cache", type=Path, default=None, help="dataset cache (bench.quality_data)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (run: default bench/results/quality.json; report: the merged "
        "result, written only when given)",
    )
    p.add_argument("--doc", type=Path, default=None, help="update this doc's table")
    p.add_argument(
        "--section",
        default="tables",
        help="--doc: the table between <!-- quality:SECTION:start/end --> (default: the main one)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override appended to every train.py run (default and auto), to measure a "
        "variant, e.g. --set trainer.optimizer=adamw; recorded in the JSON's settings",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="train each run for this share of its budget, reported as the budget: a slower "
        "machine's steps on a faster one (0.53 with ONEDNN_MAX_CPU_ISA=AVX2 on the table's "
        "machine for the AVX2 EPYC, docs/quality.md)",
    )
    p.add_argument("--smoke", action="store_true", help="stand-in data, a 30 s budget, tiny model")
    p.add_argument(
        "--calibrated",
        action="store_true",
        help="size runs by calibrated epochs instead of trainer.time_budget (the earlier way)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from bench.quality_data import SOURCES, prepare

    args = _parser().parse_args(argv)
    if not 0 < args.time_scale <= 100:
        raise SystemExit(f"--time-scale must be in (0, 100], got {args.time_scale:g}")
    bad = [s for s in args.set if "=" not in s or s.startswith("=")]
    if bad:
        raise SystemExit(f"--set takes KEY=VALUE (a Hydra override), got {bad[0]!r}")
    if args.command == "report":
        if not args.result:
            raise SystemExit("report needs at least one result JSON")
        result = merge([json.loads(p.read_text()) for p in args.result])
        text = markdown(result)
        print(text)
        if args.doc:
            update_doc(args.doc, text, *markers(args.section))
        if args.out is not None:  # the merge holds every input's runs: nothing is lost
            write_json(args.out, result)
        return 0
    args.out = args.out or ROOT / "bench" / "results" / "quality.json"
    if args.smoke:
        args.datasets = args.datasets or ["sim_fluo_nuclei"]
        # A budget must fit the warm-up steps (the first one traces the graph).
        args.budgets = args.budgets or ([3.0] if args.calibrated else [30.0])
        args.seeds = [0]
        args.assume = {"step_s": 0.2, "fixed_s": 1.0}
    else:
        args.datasets = args.datasets or [n for n, s in SOURCES.items() if s.kind != "excluded"]
        args.budgets = args.budgets or [60.0, 180.0, 600.0]
        args.assume = None
    args.calibration_steps = (2, 42)
    from bench.run import load_average, machine_facts

    result: dict[str, Any] = {
        "machine": machine_facts(),
        "load_start": load_average(),
        "settings": {
            "smoke": args.smoke, "cores": args.cores, "seeds": len(args.seeds),
            "budgets_s": args.budgets, "recipes": args.recipes,
            "sizing": "calibrated epochs" if args.calibrated else "trainer.time_budget",
            "overrides": args.set, "time_scale": args.time_scale,
        },
        "datasets": {},
        "runs": [],
    }  # fmt: skip
    for name in args.datasets:
        root = prepare(name, args.cache)
        result["datasets"][name] = json.loads((root / "SOURCE.json").read_text())
        for budget in args.budgets:
            for recipe in args.recipes:
                for seed in args.seeds:
                    try:
                        rec = run_one(name, root, recipe, budget, seed, args)
                    except RuntimeError as e:
                        rec = {"dataset": name, "recipe": recipe, "budget_s": budget,
                               "seed": seed, "error": str(e)[-2000:]}  # fmt: skip
                    result["runs"].append(rec)
                    shown = rec.get("dice", "ERROR " + rec.get("error", "")[-300:])
                    print(f"{name} {recipe} {budget:g}s seed {seed}: dice {shown} "
                          f"(train {rec.get('train_time_s')} s, wall {rec.get('wall_s')} s)",
                          flush=True)  # fmt: skip
                    result["summary"] = summarize(result["runs"])
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    write_json(args.out, result)
    result["load_end"] = load_average()
    write_json(args.out, result)
    text = markdown(result)
    print(text)
    if args.doc:
        update_doc(args.doc, text, *markers(args.section))
    return 0 if all("dice" in r for r in result["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
