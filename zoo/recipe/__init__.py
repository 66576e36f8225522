"""Training recipes planned from the data: time budget, dataset fingerprint, planner.

    from zoo.recipe import BudgetController, fingerprint_folder, plan_recipe, parse_duration

See docs/quality.md and the module docstrings of budget, fingerprint and planner.
"""

from zoo.recipe.budget import (
    BudgetController,
    BudgetError,
    BudgetPlan,
    format_duration,
    parse_duration,
    plan_steps,
    step_time_from,
)
from zoo.recipe.choices import Choice, Recipe, user_keys_from_overrides
from zoo.recipe.fingerprint import Fingerprint, fingerprint_arrays
from zoo.recipe.folder import fingerprint_folder
from zoo.recipe.planner import plan_recipe
from zoo.recipe.schedule import BudgetCosineDecay
from zoo.recipe.stats import orientation_scores
from zoo.recipe.timing import PhaseTimer

__all__ = [
    "BudgetController",
    "BudgetCosineDecay",
    "BudgetError",
    "BudgetPlan",
    "Choice",
    "Fingerprint",
    "PhaseTimer",
    "Recipe",
    "fingerprint_arrays",
    "fingerprint_folder",
    "format_duration",
    "orientation_scores",
    "parse_duration",
    "plan_recipe",
    "plan_steps",
    "step_time_from",
    "user_keys_from_overrides",
]
