"""`recipe=auto` in the app: fingerprint the data, plan, apply the plan to the composed config.

    cfg, applied = apply_recipe(cfg, explicit=user_keys, run_dir=run_dir)

Runs after Hydra has composed the config (every group and command-line override applied) and
before `zoo.config.parse`, so the planned values go through the same checks as typed ones. A key
set on the command line is never replaced (the table shows the plan's value beside it). The
fingerprint (cached per dataset) and the recipe are written to the run directory as
fingerprint.json and recipe.json.

Only `data=folder` is planned: the fingerprint reads the files. Other data keeps its config
(the log says so); `trainer.time_budget` still sizes the run.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zoo.errors import ConfigError
from zoo.recipe.budget import parse_duration
from zoo.recipe.choices import Recipe, covered
from zoo.recipe.fingerprint import Fingerprint
from zoo.recipe.folder import fingerprint_folder
from zoo.recipe.planner import plan_recipe

log = logging.getLogger("zoo")

RECIPES = ("auto",)
DEVICES = ("auto", "cpu", "gpu")
LENGTH_KEYS = ("trainer.epochs", "trainer.time_budget")  # either one: the plan sets no max_steps


@dataclass
class AppliedRecipe:
    """What `recipe=auto` did: the plan, the fingerprint, the values applied, and notes."""

    recipe: Recipe | None
    fingerprint: Fingerprint | None
    applied: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    cpu_slowdown: float | None = None  # the speed probe's factor the plan counted

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.as_dict() if self.recipe else None,
            "applied": self.applied,
            "note": self.note,
            "cpu_slowdown": self.cpu_slowdown,
            "table": self.recipe.table() if self.recipe else self.note,
        }


def detect_device(setting: str, strategy: str | None = None) -> str:
    """The planner's hardware tier: "gpu" with an accelerator (GPU, or the TPU strategy)."""
    if setting != "auto":
        return setting
    if strategy == "tpu":
        return "gpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bfloat16 math


def cpu_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """The first of `BF16_CPU_FLAGS` this CPU reports, or None (also where cpuinfo is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def _planned_bf16(cfg: DictConfig, users: set[str]) -> str | None:
    """The CPU's bfloat16 flag as the plan should count it: a precision typed on the command
    line without bfloat16 (e.g. float32 on a CPU that has it) runs float32-speed steps, and
    the width and optimizer rules estimate the steps that fit from that."""
    if "trainer.precision" in users and "bfloat16" not in str(cfg.trainer.precision):
        return None
    return cpu_bf16()


def _recorded_slowdown(run_dir: str | os.PathLike | None) -> float | None:
    """The speed probe's factor in the run directory's recipe.json (an earlier session), or
    None."""
    path = Path(run_dir) / "recipe.json" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("cpu_slowdown")
    except (OSError, ValueError, AttributeError):
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _divisor_fix(cfg: DictConfig, users: set[str]) -> dict[str, Any]:
    """Pad inside the model when the planned size is no multiple of the chosen model's
    divisor (the planner sizes for U-Net; another model may need larger multiples)."""
    from zoo.config.model import model_spec

    size = OmegaConf.select(cfg, "data.image_size")
    if size is None or "model.pad_to_divisor" in users:
        return {}
    model = OmegaConf.to_container(cfg.model, resolve=True)
    try:
        spec = model_spec(model, int(cfg.data.num_classes))
        divisor = spec.divisor
    except (ConfigError, ValueError):
        return {}  # parse reports the model's problem
    if model.get("pad_to_divisor") or all(int(s) % divisor == 0 for s in size):
        return {}
    return {"model.pad_to_divisor": True}


def _user_background(cfg: DictConfig, users: set[str]) -> int | None:
    """The command line's `data.background_class` (the Dice loss leaves that class out)."""
    if "data.background_class" not in users:
        return None
    bg = OmegaConf.select(cfg, "data.background_class")
    return bg if isinstance(bg, int) and not isinstance(bg, bool) else None


def _user_optimizer(cfg: DictConfig, users: set[str]) -> str | None:
    """The command line's `trainer.optimizer` (the planned learning rate follows it)."""
    if not covered("trainer.optimizer", users):
        return None
    return str(OmegaConf.select(cfg, "trainer.optimizer"))


def _user_flips(cfg: DictConfig, users: set[str]) -> dict[str, bool]:
    """The command line's left-right / up-down flips (the planned TTA follows them)."""
    out = {}
    for key in ("hflip", "vflip"):
        value = OmegaConf.select(cfg, f"data.augment.{key}")
        if covered(f"data.augment.{key}", users) and isinstance(value, bool):
            out[key] = value
    return out


def _fit_user_encoder(recipe: Recipe, cfg: DictConfig, users: set[str]) -> None:
    """Keep only the planned `encoder_kwargs` that an encoder set on the command line takes
    (a Mix Transformer has no `base_width`, a keras-hub backbone no `input_range`)."""
    choice = next((c for c in recipe.choices if c.key == "model.encoder_kwargs"), None)
    if choice is None or choice.user or not covered("model.encoder", users):
        return
    from zoo.registry import ENCODERS

    encoder = str(cfg.model.encoder)
    if encoder not in ENCODERS.list():
        return  # building the model names the valid encoders
    accepted = inspect.signature(ENCODERS.get(encoder).obj).parameters
    dropped = sorted(k for k in choice.value if k not in accepted)
    if not dropped:
        return
    choice.value = {k: v for k, v in choice.value.items() if k in accepted}
    choice.reason += f"; not {', '.join(dropped)}, which {encoder} does not take"
    if not choice.value:
        recipe.choices.remove(choice)
        recipe.notes.append(
            f"model.encoder={encoder} (command line) takes none of the planned encoder_kwargs "
            f"({', '.join(dropped)}): its defaults stay"
        )


def apply_recipe(
    cfg: DictConfig,
    *,
    explicit: Collection[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    write: bool = True,
    cache: bool = True,
) -> tuple[DictConfig, AppliedRecipe | None]:
    """Apply the `recipe` group's plan to a composed config.

    Args:
        cfg: the composed config (not changed; a planned copy is returned).
        explicit: dotted keys set on the command line (they keep their values).
        run_dir: where fingerprint.json and recipe.json go (None: not written).
        write: False on processes that must not write the run directory (non-chief workers).
        cache: use the fingerprint and CPU speed caches.

    Returns:
        (config, AppliedRecipe), or (cfg, None) without `recipe=...`.

    Raises:
        ConfigError / MissingFileError / DataError: an unknown recipe, a missing data.root, a
            file the fingerprint cannot read (one line naming it).
    """
    selected = cfg.get("recipe")
    if not selected:
        return cfg, None
    name = selected.get("name")
    if name not in RECIPES:
        raise ConfigError(f"Invalid recipe={name!r}; choose one of: {', '.join(RECIPES)}")
    device_setting = selected.get("device", "auto")
    if device_setting not in DEVICES:
        raise ConfigError(
            f"Invalid recipe.device={device_setting!r}; choose one of: {', '.join(DEVICES)}"
        )
    data_name = cfg.data.get("name")
    if data_name != "folder":
        note = (
            f"recipe=auto plans from a fingerprint of a folder of images (data=folder); "
            f"data={data_name} keeps its own config"
            + ("; trainer.time_budget still sizes the run" if cfg.trainer.time_budget else "")
        )
        log.info(note)
        return cfg, AppliedRecipe(None, None, {}, note)
    if OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError("Missing data.root: pass data.root=/path/to/dataset")
    t = cfg.trainer
    budget_s = parse_duration(t.time_budget) if t.time_budget is not None else None
    fp = fingerprint_folder(
        cfg.data.root,
        num_classes=int(cfg.data.num_classes),
        ignore_index=cfg.data.ignore_index,
        mask_type=str(cfg.data.mask_type),
        mask_suffix=str(cfg.data.get("mask_suffix") or ""),
        cache=cache,
        val_ratio=float(cfg.data.val_ratio),  # the app's split of root/images
        split_seed=int(cfg.data.split_seed),
        channels=int(cfg.data.get("channels", 3)),
        class_colors=OmegaConf.to_object(cfg.data.class_colors)
        if cfg.data.get("class_colors")
        else None,
        mode=str(cfg.data.get("mode") or "class"),
        class_names=list(cfg.data.class_names) if cfg.data.get("class_names") else None,
    )
    users = set(explicit or ())
    strategy = OmegaConf.select(cfg, "strategy.name")
    device = detect_device(device_setting, strategy)
    bf16 = _planned_bf16(cfg, users) if device == "cpu" else None
    slowdown = recorded = None
    # Workers of one multi-worker run must build the same model: none times its own CPU.
    probe = selected.get("cpu_probe", True) and strategy != "multi_worker"
    if device == "cpu" and budget_s is not None and probe:
        from zoo.recipe.probe import cpu_slowdown

        # A resumed run plans with the factor its first session counted, so it builds the
        # same model wherever it resumes (another node, an emptied cache).
        slowdown = recorded = _recorded_slowdown(run_dir)
        if slowdown is None:
            slowdown = cpu_slowdown(bf16 is not None, cpu_cores(), cache=cache)
    recipe = plan_recipe(
        fp,
        budget_s=budget_s,
        cores=cpu_cores(),
        device=device,
        model=str(cfg.model.name),
        user_keys=users,
        cpu_bf16=bf16,
        resample=float(cfg.data.resample) if "data.resample" in users else None,
        background=_user_background(cfg, users),
        flips=_user_flips(cfg, users),
        optimizer=_user_optimizer(cfg, users),
        cpu_slowdown=slowdown,
    )
    _fit_user_encoder(recipe, cfg, users)
    if slowdown is not None:
        recipe.notes.append(
            f"step estimates: this CPU ran the speed probe {slowdown:.2f}x as long as the "
            "reference machine (recipe.cpu_probe"
            + ("; as this run's recipe.json recorded it)" if recorded is not None else ")")
        )
    # The run's length is the user's when epochs or a budget is set (command line or config).
    length_set = any(OmegaConf.select(cfg, k) is not None for k in LENGTH_KEYS)
    skip = {"trainer.max_steps"} if length_set else set()
    applied = recipe.overrides(exclude=skip)
    planned = cfg.copy()
    for key, value in applied.items():
        OmegaConf.update(planned, key, value, merge=False, force_add=True)
    fix = _divisor_fix(planned, users)
    for key, value in fix.items():
        OmegaConf.update(planned, key, value, merge=False, force_add=True)
    applied.update(fix)
    log.info("%s", recipe.table())
    outcome = AppliedRecipe(recipe, fp, applied, cpu_slowdown=slowdown)
    if run_dir is not None and write:
        from zoo.outputs import write_json

        fp.save(Path(run_dir) / "fingerprint.json")
        write_json(Path(run_dir) / "recipe.json", outcome.as_dict())
    return planned, outcome
