"""A planned recipe as data: each choice with its reason, the table printed at the start of a
run, and the Hydra arguments that apply it (`zoo.recipe.planner` makes them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Config groups: a selection such as `model=fpn` picks a config, it does not set a key.
GROUPS = frozenset({"model", "data", "strategy", "trainer", "experiment", "recipe"})


@dataclass
class Choice:
    """One planned config value; `user`: the command line set the key (`value` is not applied)."""

    key: str
    value: Any
    reason: str
    user: bool = False


@dataclass
class Recipe:
    """The planned choices and a one-line summary of the data they were planned from."""

    choices: list[Choice]
    summary: str
    budget_s: float | None = None
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def get(self, key: str) -> Any:
        return next(c.value for c in self.choices if c.key == key)

    def overrides(self, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """{dotted key: value} of every choice the user did not set (minus `exclude`)."""
        skip = set(exclude)
        return {c.key: c.value for c in self.choices if not c.user and c.key not in skip}

    def hydra_args(self, exclude: Iterable[str] = ()) -> list[str]:
        """The overrides as Hydra command-line arguments (``++key=value``: add or replace)."""
        return [f"++{k}={hydra_value(v)}" for k, v in self.overrides(exclude).items()]

    def table(self) -> str:
        """The short table printed at the start of a run: key, value, reason."""
        rows = [
            (c.key, f"(plan: {hydra_value(c.value)})", "set on the command line")
            if c.user
            else (c.key, hydra_value(c.value), c.reason)
            for c in self.choices
        ]
        kw = max(len(r[0]) for r in rows)
        vw = min(max(len(r[1]) for r in rows), 28)
        lines = [f"Recipe (recipe=auto): {self.summary}"]
        lines += [f"  {k:<{kw}}  {v:<{vw}}  {why}" for k, v, why in rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "budget_s": self.budget_s,
            "device": self.device,
            "choices": [asdict(c) for c in self.choices],
            "notes": list(self.notes),
        }


def hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar: true/false/null, numbers, [lists], {dicts}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if any(ch in text for ch in " ,[]{}=:'\"()"):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def user_keys_from_overrides(overrides: Sequence[str]) -> set[str]:
    """Dotted keys a user set on the command line (Hydra's `overrides.task` strings).

    `data.batch_size=4` -> data.batch_size; `+loss_options.wbce.pos_weight=3` ->
    loss_options.wbce.pos_weight; `~key` counts as set. Group selections (`model=fpn`) are not
    keys: they pick a config whose values the recipe may still size.
    """
    keys = set()
    for item in overrides:
        key = item.split("=", 1)[0].strip().lstrip("+~")
        if not key or key.startswith("hydra") or key in GROUPS or "@" in key:
            continue
        keys.add(key)
    return keys


def covered(key: str, user_keys: set[str]) -> bool:
    return any(key == u or key.startswith(u + ".") or u.startswith(key + ".") for u in user_keys)
