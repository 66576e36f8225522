"""Plan a training recipe from a dataset fingerprint: config overrides, each with its reason.

    fp = fingerprint_folder(root)
    recipe = plan_recipe(fp, budget_s=180, user_keys=user_keys_from_overrides(argv))
    print(recipe.table()); overrides = recipe.overrides()  # user keys left out

Every choice is a Hydra key the app already has (`data.*`, `loss`, `loss_options`, `model.*`,
`trainer.*`), so a recipe composes with every other override; a key the user set on the command
line is never overridden (the table shows it as the user's). Steps, validation interval and LR
schedule length come from `zoo.recipe.budget.BudgetController` once the step time is measured.

The rules, and why (docs/quality.md has the measured effect):
- size (`zoo.recipe.resolution`): never resample tiles the model can take as they are; large
  images are cropped to a window that holds the largest objects (4x their p90 extent; a whole
  image for structures spanning it) within a CPU- or GPU-sized limit, after shrinking them
  (`data.resample`) when the window would not hold that at native resolution, as far as the
  thin structures allow; a ResNet decoder's depth follows the object size at that resolution
  (stride 16 suffices for objects under 32 px).
- batch (`zoo.recipe.batch`): ~128k pixels on CPU (2M on GPU), 4..16 (32), at most half the
  images (of the crops they hold, for images several windows large).
- augmentation: hflip unless the data is left-right oriented; vflip and rot90 only when the
  orientation test finds no layout prior (or, with too few images to test, for fluorescence-like
  data); zoom range from the object-size spread, for discrete objects only (structures
  spanning much of the image, e.g. anatomy at a fixed scan geometry, get none); stronger
  brightness/contrast jitter for fluorescence-like data, else jitter sized to the measured
  between-image variation of the foreground's brightness (2x, at most 0.1; several classes:
  the class that varies most), none when it varies by less than 3% (one acquisition setting);
  brightness in units of the intensity range actually used.
- loss: BCE + Dice, unweighted (nnU-Net's) unless the foreground is rare (< 5% of pixels):
  then BCE up-weights it by sqrt(imbalance) (capped at 10); multi-class: CE (with sqrt
  inverse-frequency class weights when a foreground class is rare) + Dice over the foreground
  classes (class 0 is background, and `data.background_class` so that val_dice and the best
  checkpoint follow the same classes).
- model: on CPU the original U-Net's layout, a VGG-13-BN encoder whose first stage runs at full
  resolution with a skip from it (`full_resolution_skip`) and depth 4; measured on the real
  datasets it beats a ResNet-18 U-Net at equal time where structures are a few pixels wide (a
  ResNet's stride-2 stem sees them at half resolution). Its base width is 32 when at least 400
  steps of it fit the budget (estimated from the batch's pixels, the cores and the precision),
  else 16 (without a budget: 16 for under 1 Mpx of training data). On accelerators U-Net on
  ResNet-34 at width 64.
- optimizer: SGD (Nesterov momentum 0.99, peak 1e-2) for short CPU schedules, else AdamW
  at 1e-3 (`zoo.recipe.optimizer`); cosine to zero. On CPU,
  fluorescence-like data validates and saves a moving average of the weights (momentum 0.99);
  other data its plain weights, with batch-norm statistics re-measured over about one pass of
  training batches (at most 16) before each validation (precise BN).
- input scale (`zoo.recipe.intensity`): intensities spanning under a quarter of [0, 1] (12-bit
  counts in 16-bit files) are mapped to 0..1 by the encoder (`input_range`), inside the model.
- precision: mixed bfloat16 on CPUs with native bfloat16 math (AVX512-BF16, AMX): 1.5-1.6x
  faster steps measured for the planned U-Nets on 2 cores; float32 elsewhere on CPU (emulated
  bfloat16 is slower). Accelerators keep the configured precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from zoo.recipe.batch import plan_batch
from zoo.recipe.choices import Choice, Recipe, covered
from zoo.recipe.fingerprint import Fingerprint
from zoo.recipe.intensity import input_span, span_why
from zoo.recipe.loss import plan_loss
from zoo.recipe.optimizer import plan_optimizer
from zoo.recipe.resolution import plan_resample, plan_size, short_side, spans_image
from zoo.recipe.tta import choose_tta
from zoo.recipe.width import cpu_steps, cpu_width

SHORT_CPU_BUDGET_S = 15 * 60
CPU_ENCODER = "vgg13_bn"
# Intensity jitter for data that is not fluorescence-like: this many times the between-image
# spread of the foreground's median brightness (relative to the used range), within bounds.
JITTER_PER_SPREAD = 2.0
MAX_JITTER = 0.1
# Below this spread the structures keep their brightness from image to image (one scanner, one
# template, one stain): jitter then only blurs the intensities the classes are told apart by.
# On the 3-class MRI (2.6%) no jitter raised Dice at 3 minutes on all three seeds
# (96.66 -> 96.90, docs/quality.md).
CONSISTENT_SPREAD = 0.03
# CPU plans for fluorescence-like data validate and save a moving average of the weights
# (horizon ~100 steps): on the nuclei it rose the median of 5 seeds 95.06 -> 95.18 at 3 minutes
# (4 seeds up). Other data validates its plain weights with batch-norm statistics re-measured
# over about one pass of training batches (precise BN): on the 3-class MRI 97.17/97.29/97.33
# against 96.88/96.84/97.26 for the average with the same statistics, and curves without the
# swings that batches of 4 different slices give the running statistics (docs/quality.md).
EMA_MOMENTUM = 0.99
# Precise BN keeps its batches in memory and runs them before each validation: at most this many.
PRECISE_BN_MAX_BATCHES = 16


def _summary(fp: Fingerprint) -> str:
    h, w = fp.image_size_median
    size = (
        f"{h}x{w}"
        if fp.same_size
        else f"{h}x{w} median ({fp.image_size_min[0]}..{fp.image_size_max[0]} px high)"
    )
    parts = [
        f"{fp.num_train} train / {fp.num_val} val images of {size}",
        f"{fp.channels} channel{'s' if fp.channels > 1 else ''}",
        f"foreground {fp.foreground_fraction:.1%}",
    ]
    if fp.labels:
        shares = zip(fp.labels, fp.label_frequencies)
        parts[-1] = "labels " + ", ".join(f"{k} {q:.1%}" for k, q in shares)
    if fp.object_extent.get("count"):
        parts.append(
            f"{fp.objects_per_image['median']:g} objects/image "
            f"of ~{fp.object_extent['median']:g} px"
        )
    o = fp.oriented
    parts.append("orientation unknown" if o is None else ("oriented" if o else "no orientation"))
    if fp.microscopy.get("likely"):
        parts.append("fluorescence-like")
    return ", ".join(parts)


def plan_recipe(
    fp: Fingerprint,
    *,
    budget_s: float | None = None,
    cores: int | None = None,
    device: str = "cpu",
    model: str = "unet",
    user_keys: Iterable[str] = (),
    cpu_bf16: str | None = None,
    resample: float | None = None,
    background: int | None = None,
    flips: dict[str, bool] | None = None,
    optimizer: str | None = None,
    cpu_slowdown: float | None = None,
) -> Recipe:
    """Plan config overrides from a fingerprint.

    Args:
        fp: the training data's fingerprint.
        budget_s: the training time budget (None: no budget; the recipe then sets max_steps).
        cores: CPU cores the run gets (None: 2); the width estimate scales step time by 2 / cores.
        device: "cpu" or "gpu" (any accelerator).
        model: the model the run uses; only U-Net gets decoder widths.
        user_keys: dotted keys set on the command line (`user_keys_from_overrides`); they win.
        cpu_bf16: the CPU flag of native bfloat16 math (`zoo.recipe.apply.cpu_bf16`), or None.
        resample: `data.resample` when the command line sets it (the size is planned at it);
            None: planned (`zoo.recipe.resolution.plan_resample`).
        background: `data.background_class` when the command line sets it (several classes:
            the Dice loss leaves it out); None: class 0.
        flips: the command line's `data.augment.{hflip,vflip}` values (the test-time
            augmentation follows the flips the run trains with).
        optimizer: the command line's `trainer.optimizer` (its learning rate is planned for
            it); None: planned (`zoo.recipe.optimizer.plan_optimizer`).
        cpu_slowdown: this CPU's measured step time over the reference machine's
            (`zoo.recipe.probe`); None: estimated from `cores` and `cpu_bf16`.

    Returns:
        A `Recipe`; `recipe.overrides()` are the values to apply.
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(
            "Invalid value for argument `device`: expected 'cpu' or 'gpu'. "
            f"Received: device={device!r}"
        )
    users = set(user_keys)
    cpu = device == "cpu"
    choices: list[Choice] = []
    notes: list[str] = list(fp.notes)

    def choose(key: str, value: Any, reason: str) -> None:
        choices.append(Choice(key, value, reason, user=covered(key, users)))

    # ---- resolution (first: the objects' size at it sets the decoder depth and the crop)
    if resample is not None:  # the command line's: the crop size and depth follow it
        resample_why = "set on the command line"
    else:
        resample, resample_why = plan_resample(fp, device)
        if resample != 1 and covered("data.resize", users):  # resize mode takes no resample
            resample, resample_why = 1.0, "data.resize was set on the command line: not resampled"
    e90 = float(fp.object_extent.get("p90", 0) or 0) * resample
    has_objects = bool(fp.object_extent.get("count"))
    pixels = fp.num_train * int(fp.image_size_median[0]) * int(fp.image_size_median[1])
    pixels = int(pixels * resample**2)
    short = cpu and budget_s is not None and budget_s <= SHORT_CPU_BUDGET_S
    encoder = CPU_ENCODER if cpu else "resnet34"  # the width follows the batch, below
    vgg = encoder == CPU_ENCODER
    # VGG's fifth stage (stride 16) is the bottleneck, as in the original U-Net.
    depth = 4 if vgg or (has_objects and e90 <= 32) else 5
    divisor = 2**depth
    size, pad, size_why = plan_size(fp, divisor, resample, device)
    min_side = short_side(fp)
    choose("data.image_size", size, size_why)
    choose("data.resize", "crop", "keep the aspect ratio (crop, never squash or stretch)")
    choose("data.resample", resample, resample_why)
    if resample != 1:
        choose(
            "trainer.final_eval",
            "full_resolution",
            f"trained at {resample:g}x: the final Dice is scored on the stored files, full size",
        )
    if pad:
        choose(
            "model.pad_to_divisor",
            True,
            f"{size[0]}x{size[1]} is not a multiple of {divisor}: pad inside the model",
        )

    # ---- batch
    batch_plan = plan_batch(fp, size, resample, device)
    batch = batch_plan.size
    choose("data.batch_size", batch, batch_plan.reason)
    width, why = (64, "accelerator")
    if cpu:
        batch_px = batch * size[0] * size[1]
        width, why = cpu_width(
            budget_s, batch_px, pixels, cores, cpu_bf16, batch_plan.share, cpu_slowdown
        )

    # ---- augmentation
    o = fp.orientation
    oriented = o.get("oriented")
    fluo = bool(fp.microscopy.get("likely"))
    left_right = bool(o.get("left_right"))
    choose(
        "data.augment.hflip",
        not left_right,
        "left-right flips change the data's statistics" if left_right else "no left-right prior",
    )
    if oriented is None:
        free = fluo
        why_o = f"only {o.get('n')} images to test orientation; " + (
            "fluorescence-like data has none" if fluo else "assume upright"
        )
    else:
        free = not oriented
        why_o = (
            f"flip/transpose test: vertical {o.get('vertical')}, transpose {o.get('transpose')} "
            f"{'>=' if oriented else '<'} {o.get('threshold')}"
        )
    choose(
        "data.augment.vflip",
        free,
        ("no orientation prior: " if free else "oriented data: ") + why_o,
    )
    choose("data.augment.rot90", free, "as vflip (90-degree turns)")
    trained = {"hflip": not left_right, "vflip": free, **(flips or {})}
    # (resampled runs score full size already; a typed resize mode squashes the images)
    whole_files = resample == 1 and not covered("data.resize", users)
    choose_tta(choose, bool(trained["hflip"]), bool(trained["vflip"]), whole_files)
    if spans_image(fp):  # a fixed geometry: no zoom jitter
        e90_native = fp.object_extent["p90"]
        choose(
            "data.augment.scale",
            [1.0, 1.0],
            f"structures span the image (p90 extent {e90_native:g} of {min_side} px): "
            "a fixed geometry, no zoom",
        )
    elif has_objects and fp.object_extent.get("p10", 0) > 0:
        spread = fp.object_extent["p90"] / fp.object_extent["p10"]
        zoom = min(max(math.sqrt(spread), 1.05), 1.4)
        smin = round(1.0 / zoom**2, 2)
        choose(
            "data.augment.scale",
            [smin, 1.0],
            f"object sizes p10..p90 {fp.object_extent['p10']:g}..{fp.object_extent['p90']:g} px: "
            f"zoom up to {zoom:.2f}x",
        )
    else:
        choose("data.augment.scale", [0.6, 1.0], "no objects measured: moderate zoom")
    # Jitter in units of what the model sees: [0, p99.5], or the span `input_range` spreads.
    span = input_span(fp)
    top = max(fp.intensity.get("p99_5", [1.0]) or [1.0])
    top = span[1] - span[0] if span else min(max(float(top), 1e-3), 1.0)
    spread = fp.intensity.get("foreground_median_sd") or []
    if fluo:
        bright, contrast = 0.15, 0.3
        why_b = ": exposure varies in fluorescence data"
        why_c = "fluorescence-like: staining/exposure vary"
    elif spread:
        # Jitter the data does not show slows a short training down (on an MRI template a
        # shift of 0.09 instead of 0.03 cost 0.6 Dice points at 3 minutes, median of 3 seeds):
        # match the measured variation, and none where the data hardly varies.
        rel = float(spread[0]) / top
        if rel < CONSISTENT_SPREAD:
            bright = contrast = 0.0
            why_b = (
                f": the labelled structures' median brightness varies by only {rel:.1%} of it "
                f"between images (< {CONSISTENT_SPREAD:.0%}): one acquisition setting, where "
                "jitter would only blur the intensities the classes are told apart by"
            )
            why_c = "none, as brightness: the data's intensities are consistent"
        else:
            bright = contrast = round(min(JITTER_PER_SPREAD * rel, MAX_JITTER), 3)
            why_b = (
                f": the labelled structures' median brightness varies by {rel:.1%} of it "
                f"between images; {JITTER_PER_SPREAD:g}x that, at most {MAX_JITTER:g}"
            )
            why_c = "as brightness: sized to the measured between-image variation"
    else:
        bright, contrast = MAX_JITTER, MAX_JITTER
        why_b = ": too few images with foreground to measure its variation"
        why_c = "mild contrast jitter"
    choose(
        "data.augment.brightness",
        float(f"{bright * top:.3g}"),  # 3 digits: a 16-bit span may be 0.005 wide
        f"{bright:g} of the used intensity range ({top:.3g})" + why_b,
    )
    choose("data.augment.contrast", contrast, why_c)

    # ---- loss (zoo.recipe.loss)
    plan_loss(fp, choose, background)

    # ---- model
    if model == "unet":
        choose(
            "model.encoder",
            encoder,
            "CPU: full-resolution first stage (the original U-Net's encoder)"
            if vgg
            else "accelerator: ResNet-34 (a common, well-studied encoder)",
        )
        kwargs = {"base_width": width, **({"input_range": list(span)} if span else {})}
        choose(
            "model.encoder_kwargs", kwargs, f"{why}: width {width} (default 64)" + span_why(span)
        )
        if vgg:  # each block as wide as the encoder stage it joins (16 ... 128 at width 16)
            chans = [width * 2 ** (depth - 1 - i) for i in range(depth)]
        elif width < 64:
            # Integer arithmetic: the last stage is width / 2 (a float 16.0 fails the config).
            chans = [max(8, width * 2 ** (depth - 1 - i) // 2) for i in range(depth)]
        else:
            chans = [256, 128, 64, 32, 16][:depth]
        choose(
            "model.decoder_channels",
            chans,
            f"depth {depth} (stride {divisor})"
            + (
                ": the original U-Net's"
                if vgg
                else (f": objects <= 32 px (p90 {e90:g})" if depth == 4 else "")
            )
            + ", widths matching the encoder",
        )
        if vgg:
            choose(
                "model.full_resolution_skip",
                True,
                "skip from the full-resolution stage: structures a few pixels wide keep "
                "their edges",
            )
    elif "model.encoder" not in users:
        notes.append(f"model={model}: only U-Net gets a planned width; the model's defaults stay")

    # ---- optimization
    steps = None  # the planned U-Net's estimated steps (another model's are unknown)
    if short and model == "unet" and not covered("model.encoder", users):
        steps = cpu_steps(budget_s, batch_px, width, cores, cpu_bf16, cpu_slowdown)
    plan_optimizer(choose, short, optimizer, steps)
    if cpu:
        if cpu_bf16:
            choose(
                "trainer.precision",
                "mixed_bfloat16",
                f"this CPU computes bfloat16 natively ({cpu_bf16}): steps ~1.5x faster than "
                "float32, more of them fit (the saved model is float32)",
            )
        else:
            choose("trainer.precision", "float32", "no native bfloat16 on this CPU")
        if fluo:
            choose(
                "trainer.ema_momentum",
                EMA_MOMENTUM,
                "fluorescence-like: validate and save a moving average of the weights, which "
                "smooths the step-to-step noise of small batches of few tiles",
            )
        else:
            n_bn = min(math.ceil(batch_plan.samples / batch), PRECISE_BN_MAX_BATCHES)
            choose(
                "trainer.ema_momentum",
                None,
                "plain weights: measured better than their moving average on MRI (+0.3)",
            )
            choose(
                "trainer.precise_bn_batches",
                n_bn,
                f"batch-norm statistics over {n_bn} training batches (~{n_bn * batch} "
                f"{batch_plan.unit}) "
                "before each validation: small batches of different images make the running "
                "ones swing",
            )
    choose("trainer.schedule", "cosine", "cosine over the steps that fit (warm-up 5%, <= 50 steps)")
    if budget_s is None:
        per_epoch = max(1, fp.num_train // batch)
        steps = min(max(250 * per_epoch, 1000), 10000)
        choose(
            "trainer.max_steps",
            steps,
            "no time budget: ~250 passes over the data, 1000..10000 steps",
        )
    recipe = Recipe(choices, _summary(fp), budget_s, device, notes)
    if cores:
        recipe.notes.append(f"planned for {cores} CPU core(s)" if cpu else f"planned for {device}")
    return recipe
