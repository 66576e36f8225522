"""Table-driven mapping of PyTorch state-dict keys onto our Keras variables.

A `Table` is an ordered list of `Rule`s. Each rule matches one of *our* layer names (a regular
expression, full match) and names the PyTorch module that holds its parameters (a template
filled from the match's groups). Which parameter each variable takes, and how its layout
changes, follows from the kind of our layer (`KINDS`): a `Conv2D`'s ``kernel`` is the
module's ``weight`` transposed OIHW -> HWIO, a batch norm's ``moving_variance`` is its
``running_var``, and so on. A rule may name the kind itself where the layer class does not
say it (e.g. a custom layer).

`assign` checks the whole plan first (every variable of ours has a rule and a key, every key
of the checkpoint is used or ignored, every shape matches) and only then writes, so a failed
port leaves the model untouched and raises one `PortError` naming the first problem.

Templates: ``{1}`` is the rule's first group, ``{2-1}`` (or ``{2+1}``) the second group as an
integer minus (plus) one, so 1-based layer names map to 0-based module indices::

    Rule(r"stage(\\d)_block(\\d+)_conv(\\d)_conv", "layer{1}.{2-1}.conv{3}")

Tables are written relative to a prefix on each side and bound with `Table.bind` (our layer
names ``encoder_...``, their keys ``encoder.`` in a segmentation_models_pytorch checkpoint).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from zoo.errors import UserError
from zoo.port.layouts import ALWAYS_IGNORED, KINDS, TRANSFORMS, layer_kind


class PortError(UserError, ValueError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped key)."""


# === Rules and tables ===

_FIELD = re.compile(r"\{(\d+)([+-]\d+)?\}")


def _fill(template: str, match: re.Match) -> str:
    def field_value(m: re.Match) -> str:
        value = match.group(int(m.group(1)))
        if m.group(2):
            return str(int(value) + int(m.group(2)))
        return value

    return _FIELD.sub(field_value, template)


@dataclass(frozen=True)
class Rule:
    """One of our layers (regex over its name) -> the PyTorch module holding its parameters.

    Args:
        ours: regular expression that must match our whole layer name (after the table's
            prefix).
        theirs: their module path, a template (``{1}``, ``{2-1}``: see the module docstring),
            or a function of the match returning it.
        kind: a `KINDS` name (or a ``{variable: (suffix, transform)}`` dict) when our layer's
            class does not determine it, or a function of our layer returning such a dict
            (a layer whose variables sit in several of their modules, e.g. `AllMLPFuse`:
            suffixes may then be module paths, ``"mlp_stage.0.linear.weight"``).
    """

    ours: str
    theirs: str | Callable[[re.Match], str]
    kind: str | Mapping[str, tuple[str, str]] | Callable[[Any], Mapping] | None = None

    def target(self, match: re.Match) -> str:
        return self.theirs(match) if callable(self.theirs) else _fill(self.theirs, match)


@dataclass(frozen=True)
class Table:
    """An ordered list of rules (first match wins), with the prefixes both sides carry.

    Args:
        name: what the table describes, used in messages (e.g. ``"resnet (torchvision)"``).
        rules: the rules.
        ignore: regexes of their keys to skip silently (e.g. a classifier ``fc\\..*``).
        ours_prefix: prepended to every rule's ``ours`` pattern (e.g. ``"encoder_"``).
        theirs_prefix: prepended to every module path and ignore pattern (e.g.
            ``"encoder."``).
    """

    name: str
    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = ()
    ours_prefix: str = ""
    theirs_prefix: str = ""
    _compiled: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        compiled = tuple(
            (re.compile(re.escape(self.ours_prefix) + rule.ours), rule) for rule in self.rules
        )
        object.__setattr__(self, "_compiled", compiled)

    def bind(self, ours: str = "", theirs: str = "") -> Table:
        """This table with our layer names under `ours` and their keys under `theirs`."""
        return replace(
            self,
            ours_prefix=ours + self.ours_prefix,
            theirs_prefix=theirs + self.theirs_prefix,
        )

    def __add__(self, other: Table) -> Table:
        """Both tables as one (for a whole model: encoder table + decoder table)."""
        rules = [_prefixed(t, r) for t in (self, other) for r in t.rules]
        ignore = [t.theirs_prefix + p for t in (self, other) for p in t.ignore]
        return Table(f"{self.name} + {other.name}", tuple(rules), tuple(ignore))

    def lookup(self, layer_name: str) -> tuple[Rule, str] | None:
        """(rule, their module path) for our layer `layer_name`, or None."""
        for pattern, rule in self._compiled:
            match = pattern.fullmatch(layer_name)
            if match:
                return rule, self.theirs_prefix + rule.target(match)
        return None

    def ignored(self, key: str) -> bool:
        patterns = [self.theirs_prefix + p for p in self.ignore] + list(ALWAYS_IGNORED)
        return any(re.fullmatch(p, key) for p in patterns)


def _prefixed(table: Table, rule: Rule) -> Rule:
    """`rule` with `table`'s prefixes folded in, so it survives being merged into another."""
    ours = re.escape(table.ours_prefix) + rule.ours
    if callable(rule.theirs):
        theirs = rule.theirs
        if table.theirs_prefix:
            prefix = table.theirs_prefix

            def theirs(match, _inner=rule.theirs, _prefix=prefix):
                return _prefix + _inner(match)

        return Rule(ours, theirs, rule.kind)
    return Rule(ours, table.theirs_prefix + rule.theirs, rule.kind)


# === Registry of tables ===

_TABLES: dict[str, Table] = {}


def register_table(name: str, table: Table) -> Table:
    """Register `table` under `name` (e.g. ``"resnet"``, ``"smp.unet"``); returns it."""
    if name in _TABLES:
        raise ValueError(f"Port table {name!r} is already registered; pick another name.")
    _TABLES[name] = table
    return table


def get_table(name: str) -> Table:
    """The table registered under `name`; unknown names raise with the choices."""
    if name not in _TABLES:
        raise ValueError(
            f"Unknown port table {name!r}. Available tables: {', '.join(sorted(_TABLES))}"
        )
    return _TABLES[name]


def list_tables() -> list[str]:
    return sorted(_TABLES)


# === Planning and assignment ===


@dataclass(frozen=True)
class Assignment:
    """One planned write: our variable <- their key (after the transform)."""

    variable: Any
    key: str
    value: np.ndarray


def _layers_with_variables(target: Any) -> list[Any]:
    roots = list(target) if isinstance(target, (list, tuple)) else [target]
    layers = [
        layer
        for root in roots
        for layer in (root, *root._flatten_layers(include_self=False, recursive=True))
    ]
    out, seen = [], set()
    for layer in layers:
        # Only a layer's own variables: nested models/layers are visited themselves.
        own = _own_variables(layer)
        if own and id(layer) not in seen:
            seen.add(id(layer))
            out.append((layer, own))
    return out


def _own_variables(layer: Any) -> list[Any]:
    import keras

    if isinstance(layer, keras.Model) or not hasattr(layer, "_trainable_variables"):
        return []
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def plan(
    target: Any,
    state_dict: Mapping[str, np.ndarray],
    table: Table,
    source: str = "the checkpoint",
) -> list[Assignment]:
    """Every write `assign` would make, or a `PortError` naming the first problem.

    Args:
        target: a Keras model or layer (all its layers with variables), or a list of layers.
        state_dict: their key -> array.
        table: the mapping.
        source: how messages name the checkpoint (e.g. its path).
    """
    problems: list[str] = []
    writes: list[Assignment] = []
    used: set[str] = set()
    for layer, variables in _layers_with_variables(target):
        found = table.lookup(layer.name)
        if found is None:
            problems.append(
                f"our layer {layer.name!r} has no rule in port table {table.name!r} "
                f"(its variables: {[v.path for v in variables]})"
            )
            continue
        rule, module = found
        kind = rule.kind or layer_kind(layer)
        if callable(kind):
            kind = kind(layer)
        params = KINDS.get(kind) if isinstance(kind, str) or kind is None else kind
        if params is None:
            problems.append(
                f"port table {table.name!r} maps our layer {layer.name!r} "
                f"({type(layer).__name__}) to {module!r} but no layer kind is known; give the "
                f"rule a kind, one of {sorted(KINDS)}"
            )
            continue
        for variable in variables:
            name = variable.name.split("/")[-1]
            if name not in params:
                problems.append(
                    f"our variable {variable.path!r} has no counterpart in "
                    + (f"kind {kind!r}" if isinstance(kind, str) else f"rule {rule.ours!r}")
                    + f" (known: {sorted(params)})"
                )
                continue
            suffix, transform_name = params[name]
            key = f"{module}.{suffix}" if suffix else module
            if key not in state_dict:
                problems.append(
                    f"missing key {key!r} in {source} (needed for our variable {variable.path!r})"
                )
                continue
            used.add(key)
            raw = np.asarray(state_dict[key])
            value = TRANSFORMS[transform_name](raw, _shape(variable))
            if _shape(value) != _shape(variable):
                problems.append(
                    f"shape mismatch for key {key!r}: {source} has {_shape(raw)}"
                    + (f" (-> {_shape(value)} ours)" if _shape(value) != _shape(raw) else "")
                    + f", our variable {variable.path!r} has {_shape(variable)}"
                )
                continue
            writes.append(Assignment(variable, key, value))
    extra = [k for k in state_dict if k not in used and not table.ignored(k)]
    if extra:
        problems.append(
            f"unexpected key {extra[0]!r} in {source}: port table {table.name!r} maps none "
            f"of our variables to it"
            + (f" ({len(extra) - 1} more unexpected keys)" if len(extra) > 1 else "")
        )
    if problems:
        more = f" [{len(problems) - 1} more problems]" if len(problems) > 1 else ""
        raise PortError(f"Cannot load {source} with port table {table.name!r}: {problems[0]}{more}")
    return writes


def assign(
    target: Any,
    state_dict: Mapping[str, np.ndarray],
    table: Table | str,
    source: str = "the checkpoint",
) -> list[Assignment]:
    """Write `state_dict` into `target`'s variables through `table`, all or nothing.

    Args:
        target: a Keras model or layer, or a list of layers.
        state_dict: their key -> NumPy array (see `zoo.port.load_state_dict`).
        table: a `Table` or the name of a registered one.
        source: how messages name the checkpoint.

    Returns:
        The writes made (our variable, their key, value).

    Raises:
        PortError: one line naming the first missing, unexpected or mis-shaped key (with both
            shapes), or our first variable without a rule; nothing is written then.
    """
    table = get_table(table) if isinstance(table, str) else table
    writes = plan(target, state_dict, table, source)
    for w in writes:
        w.variable.assign(w.value.astype(w.variable.dtype, copy=False))
    return writes


def layers_between(inputs: Any, outputs: Iterable[Any] | Mapping[Any, Any]) -> list[Any]:
    """The layers of a functional graph under construction between `inputs` and `outputs`.

    Walks the Keras history back from every output tensor and stops at `inputs` (one tensor
    or a list); used by encoder builders to load weights into the layers they just added to
    a caller's graph.
    """
    stop = {id(t) for t in (inputs if isinstance(inputs, (list, tuple)) else [inputs])}
    tensors, pending = [], list(outputs.values() if isinstance(outputs, Mapping) else outputs)
    while pending:  # nested lists and tuples (a ViT's per-block (grid, prefix) pairs) flattened
        item = pending.pop()
        if isinstance(item, (list, tuple)):
            pending.extend(item)
        else:
            tensors.append(item)
    seen_ops: dict[int, Any] = {}
    seen_tensors: set[int] = set()
    while tensors:
        tensor = tensors.pop()
        if id(tensor) in stop or id(tensor) in seen_tensors:
            continue
        seen_tensors.add(id(tensor))
        history = getattr(tensor, "_keras_history", None)
        if history is None or history.operation is None:
            continue
        op = history.operation
        seen_ops.setdefault(id(op), op)
        node = op._inbound_nodes[history.node_index]
        tensors.extend(node.input_tensors)
    return list(seen_ops.values())
