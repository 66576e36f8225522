"""Whole segmentation_models_pytorch models -> zoo models (``python -m zoo.port smp``).

An smp checkpoint is a state dict saved with ``torch.save(model.state_dict(), path)`` (or a
``.safetensors`` file) of an smp model with a native encoder of ours (``resnet18`` ...
``resnet152``, ``resnext50_32x4d`` ... ``resnext101_32x48d``, ``se_resnet50`` ...
``se_resnext101_32x4d``, ``efficientnet-b0`` ... ``efficientnet-b7``,
``timm-efficientnet-*``, ``timm-tf_efficientnet_lite*``, ``mobilenet_v2``, ``vgg*``,
``mit_b0`` ... ``mit_b5``, ``vit_*``). The zoo model is built with the architecture read from the
weights (number of classes, input channels, decoder widths), its encoder from the encoder's
port table bound to ``encoder.``, its decoder and head from the architecture's table
(``zoo/port/tables/``). Everything is checked before anything is written: a missing,
unexpected or mis-shaped key is one error naming it.

smp models take images normalized by the caller (``(x - mean) / std`` with ImageNet's
statistics for ImageNet encoders); the ported model takes [0, 1] images like every zoo
model and normalizes inside (``normalization="imagenet"``, the default for 3-channel
checkpoints; ``"encoder"``: the statistics of the encoder's own pretrained weights, which smp's
``get_preprocessing_params`` gives, e.g. [-1, 1] for Xception), or leaves it to the caller
(``normalization="none"``, the default otherwise).

Adding an architecture (e.g. one added to the zoo later): register its decoder table in
``zoo/port/tables/`` and an `SmpModel` here or in its own module::

    register_smp_model("linknet", SmpModel(arch="Linknet", model="linknet",
                                           table="smp.linknet", kwargs=lambda state: {}))
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConfigError, MissingFileError, OutputError
from zoo.port.mapping import PortError, assign, get_table
from zoo.port.state_dict import load_state_dict

NORMALIZATIONS = ("imagenet", "encoder", "none")
HEAD_KEY = "segmentation_head.0.weight"


@dataclass(frozen=True)
class SmpModel:
    """How one smp architecture maps onto a zoo model.

    Args:
        arch: the smp class name (``"Unet"``), for messages and docs.
        model: the zoo model's registry name.
        table: the port table of its decoder and head (their keys under ``decoder.`` and
            ``segmentation_head.``).
        kwargs: the zoo constructor's arguments read from the state dict (decoder widths
            and the like; not `num_classes`, `input_shape`, `encoder`); a function of two
            arguments also gets the chosen `options` (zoo names) and ``"encoder"``.
        options: smp constructor arguments the weights do not tell (an output stride, atrous
            rates) -> the zoo argument that takes the same value; `port_smp`'s `options`
            (``--smp-arg name=value``) may set them, smp's defaults are the zoo model's.
        unused: regexes of the checkpoint's keys that smp builds but never runs (e.g. the
            encoder stages after PSPNet's `encoder_depth`), from the state dict and the zoo
            arguments; the zoo model has no such weights.
        head_key: the classifier's weight, which tells the number of classes.
        encoder_prefix: where the encoder's own keys sit (``encoder.model.`` for smp's timm
            encoders).
    """

    arch: str
    model: str
    table: str
    kwargs: Callable[[dict[str, np.ndarray]], dict[str, Any]]
    options: Mapping[str, str] = field(default_factory=dict)
    unused: Callable[[dict[str, np.ndarray], dict[str, Any]], tuple[str, ...]] | None = None
    head_key: str = "segmentation_head.0.weight"
    encoder_prefix: str = "encoder."


_MODELS: dict[str, SmpModel] = {}


def register_smp_model(name: str, entry: SmpModel) -> SmpModel:
    """Make ``python -m zoo.port smp --model NAME`` port smp's `entry.arch`."""
    if name in _MODELS:
        raise ConfigError(f"smp model {name!r} is already registered; pick another name.")
    _MODELS[name] = entry
    return entry


def list_smp_models() -> list[str]:
    return sorted(_MODELS)


def _key(state: dict, key: str, checkpoint: str) -> np.ndarray:
    if key not in state:
        raise PortError(
            f"Cannot port {checkpoint}: missing key {key!r} (not a segmentation_models_pytorch "
            "model state dict of this architecture?)"
        )
    return state[key]


def _unet_kwargs(state: dict[str, np.ndarray]) -> dict[str, Any]:
    channels, i = [], 0
    while f"decoder.blocks.{i}.conv1.0.weight" in state:
        channels.append(int(state[f"decoder.blocks.{i}.conv1.0.weight"].shape[0]))
        i += 1
    if not channels:
        raise PortError("missing key 'decoder.blocks.0.conv1.0.weight' (not an smp Unet?)")
    # smp adds a center block for VGG encoders.
    return {"decoder_channels": channels, "center_block": "decoder.center.0.0.weight" in state}


def _fpn_kwargs(state: dict[str, np.ndarray]) -> dict[str, Any]:
    for key in ("decoder.p5.weight", "decoder.seg_blocks.3.block.0.block.0.weight"):
        if key not in state:
            raise PortError(f"missing key {key!r} (not an smp FPN?)")
    segmentation = int(state["decoder.seg_blocks.3.block.0.block.0.weight"].shape[0])
    head_in = int(state[HEAD_KEY].shape[1]) if HEAD_KEY in state else segmentation
    return {
        "pyramid_channels": int(state["decoder.p5.weight"].shape[0]),
        "segmentation_channels": segmentation,
        "merge": "add" if head_in == segmentation else "concat",
        "decoder_norm": "group",
        "align_corners": True,
    }


def _segformer_kwargs(state: dict[str, np.ndarray]) -> dict[str, Any]:
    key = "decoder.fuse_stage.0.weight"
    if key not in state:
        raise PortError(f"missing key {key!r} (not an smp Segformer?)")
    return {"decoder_channels": int(state[key].shape[0])}


register_smp_model("unet", SmpModel("Unet", "unet", "smp.unet", _unet_kwargs))
register_smp_model("fpn", SmpModel("FPN", "fpn", "smp.fpn", _fpn_kwargs))
register_smp_model(
    "segformer", SmpModel("Segformer", "segformer", "smp.segformer", _segformer_kwargs)
)


def port_smp(
    checkpoint: str | os.PathLike,
    model: str,
    encoder: str = "resnet34",
    num_classes: int | None = None,
    normalization: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """A zoo model with the weights of an smp checkpoint.

    Args:
        checkpoint: an smp model's state dict (``.pth``/``.pt``/``.bin`` from
            ``torch.save``, or ``.safetensors``).
        model: the architecture, one of `list_smp_models()`.
        encoder: the smp encoder name, a native zoo encoder (``resnet18``, ``resnext50_32x4d``).
        num_classes: checked against the weights when given (they tell it).
        normalization: "imagenet" (the model normalizes [0, 1] images inside, as smp's
            ImageNet preprocessing did outside), "encoder" (inside, with the statistics of
            the encoder's pretrained weights, as smp's ``get_preprocessing_params``) or
            "none"; default: "imagenet" for 3 input channels, "none" otherwise.
        options: smp constructor arguments that the weights do not tell, in smp's names
            (e.g. ``{"encoder_output_stride": 8}`` for a `DeepLabV3Plus`); those not given
            are smp's defaults. Which ones an architecture takes: `SmpModel.options`.
            One mapped to ``"encoder_kwargs.NAME"`` is the encoder builder's argument NAME
            (smp passes such arguments on to timm, e.g. a ViT's ``num_heads``).

    Returns:
        The zoo model (inference ready; its config records the checkpoint as
        `encoder_weights`, which loading a saved copy never reads).

    Raises:
        ValueError / PortError / FileNotFoundError: one line naming the bad value, key or
            file.
    """
    from zoo import pretrained

    if model not in _MODELS:
        raise ConfigError(
            f"Invalid value for argument `model`: expected one of {list_smp_models()} "
            f"(segmentation_models_pytorch architectures the zoo shares). Received: "
            f"model={model!r}"
        )
    entry = _MODELS[model]
    chosen = _options(entry, options)  # a bad option fails before any file is read
    for prefix in ("tu-", "timm-"):  # smp's timm names of a native encoder (tu-convnext_*,
        # and its older timm-regnet* that smp 0.6 maps to tu-regnet*, timm-mobilenetv3_* to
        # tu-tf_mobilenetv3_*)
        rest = encoder[len(prefix) :]
        if prefix == "timm-" and rest.startswith("mobilenetv3"):
            rest = f"tf_{rest}"
        if encoder.startswith(prefix) and encoder not in pretrained._ENCODERS:
            encoder = rest if rest in pretrained._ENCODERS else encoder
    spec = pretrained._ENCODERS.get(encoder)
    if spec is None:
        portable = sorted(pretrained._ENCODERS)
        raise ConfigError(
            f"Invalid value for argument `encoder`: expected one of {portable} (native "
            f"encoders in smp's layout). Received: encoder={encoder!r}"
        )
    source = str(checkpoint)
    state = load_state_dict(checkpoint)
    if spec.rename is not None:  # the encoder's keys as its table names them
        state = {spec.rename(k): v for k, v in state.items()}
    classes = int(_key(state, entry.head_key, source).shape[0])
    if num_classes is not None and num_classes != classes:
        raise ConfigError(
            f"Invalid value for argument `num_classes`: the checkpoint's head has {classes} "
            f"classes. Received: num_classes={num_classes!r}"
        )
    first_conv = f"{entry.encoder_prefix}{spec.first_conv}.weight"
    if first_conv not in state:
        raise PortError(
            f"Cannot port {source}: missing key {first_conv!r}, the first convolution of an "
            f"smp model with encoder {encoder!r} (is it another encoder's? --encoder / "
            "`encoder` names it)"
        )
    channels = int(state[first_conv].shape[1])
    try:
        if _takes_options(entry):
            read = entry.kwargs(state, {**chosen, "encoder": encoder})
        else:
            read = entry.kwargs(state)
        kwargs = {**read, **chosen}
    except PortError as err:
        raise PortError(f"Cannot port {source} as smp {entry.arch}: {err}") from None
    for name in [k for k in kwargs if k.startswith("encoder_kwargs.")]:
        kwargs.setdefault("encoder_kwargs", {})[name.split(".", 1)[1]] = kwargs.pop(name)
    encoder_table = get_table(spec.table).bind(ours="encoder_", theirs=entry.encoder_prefix)
    table = encoder_table + get_table(entry.table)
    if entry.unused is not None:
        table = replace(table, ignore=(*table.ignore, *entry.unused(state, kwargs)))
    return build_and_assign(
        state,
        table,
        source,
        normalization,
        channels,
        model=entry.model,
        num_classes=classes,
        encoder=encoder,
        **kwargs,
    )


def _takes_options(entry: SmpModel) -> bool:
    """Whether `entry.kwargs` also takes the chosen options (``kwargs(state, options)``), for
    an architecture whose weights leave an option to be given (DPT's readout)."""
    import inspect

    return len(inspect.signature(entry.kwargs).parameters) > 1


def _options(entry: SmpModel, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The zoo arguments for smp `options` (smp's names), checked against the entry's."""
    out = {}
    for name, value in (options or {}).items():
        if name not in entry.options:
            valid = ", ".join(sorted(entry.options)) or "none"
            raise ConfigError(
                f"Invalid smp option {name!r} for smp {entry.arch}: the options its weights do "
                f"not tell are {valid}. Received: {name}={value!r}"
            )
        out[entry.options[name]] = value
    return out


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["encoder_output_stride=8", "decoder_atrous_rates=[6, 12, 18]"]`` -> a dict (values
    are Python literals where they parse as one, strings otherwise)."""
    options = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"Invalid value for argument `--smp-arg`: expected NAME=VALUE. Received: {pair!r}"
            )
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        options[name.strip()] = list(value) if isinstance(value, tuple) else value
    return options


def build_and_assign(
    state: dict[str, np.ndarray],
    table: Any,
    source: str,
    normalization: str | None,
    channels: int,
    model: str,
    **arguments: Any,
) -> Any:
    """Build zoo `model` for a whole checkpoint (``channels`` input channels, its
    `normalization` inside or not) and assign `state` through `table`, all or nothing.

    The graph is the one pretrained weights get (their normalization and padding), built
    without reading any source; `encoder_weights` records `source` as provenance.
    """
    from zoo.build_context import restoring_from_file
    from zoo.registry import create_model

    if normalization is None:
        normalization = "imagenet" if channels == 3 else "none"
    if normalization not in NORMALIZATIONS:
        raise ConfigError(
            f"Invalid value for argument `normalization`: expected one of {NORMALIZATIONS}. "
            f"Received: normalization={normalization!r}"
        )
    if normalization != "none" and channels != 3:
        raise ConfigError(
            f"Invalid value for argument `normalization`: {normalization!r} normalization is "
            f"defined for RGB, the checkpoint's encoder takes {channels} channels; use 'none' and "
            f"normalize as for its training. Received: normalization={normalization!r}"
        )
    encoder_kwargs = dict(arguments.pop("encoder_kwargs", None) or {})
    if normalization == "none":
        encoder_kwargs["input_normalization"] = None
    elif normalization == "imagenet":
        from zoo import pretrained

        spec = pretrained._ENCODERS.get(arguments.get("encoder"))
        if spec is not None and spec.normalization != pretrained.IMAGENET:
            # An encoder whose own files use other statistics (timm's ViTs, Xception: 0.5).
            encoder_kwargs["input_normalization"] = "imagenet"
    with restoring_from_file():
        net = create_model(
            model,
            input_shape=(None, None, channels),
            encoder_kwargs=encoder_kwargs,
            encoder_weights=source,
            **arguments,
        )
    assign(net, state, table, source=source)
    return net


def main(args: Any) -> str:
    """``python -m zoo.port smp``: port and save; returns the one-line summary."""
    checkpoint = check_paths(args)
    options = parse_options(getattr(args, "smp_arg", None))
    net = port_smp(
        checkpoint, args.model, args.encoder, args.num_classes, args.normalization, options
    )
    return save(net, args, f"smp {_MODELS[args.model].arch} ({args.encoder}, ")


def check_paths(args: Any) -> Path:
    """The checkpoint of a ``python -m zoo.port`` command, checked with its ``--out``."""
    out = Path(args.out)
    if out.suffix != ".keras":
        raise ConfigError(
            f"Invalid value for argument `--out`: expected a .keras file. Received: {out}"
        )
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise MissingFileError(f"No checkpoint file at {checkpoint}")
    return checkpoint


def save(net: Any, args: Any, what: str) -> str:
    """Save a ported model to ``args.out`` (atomically); the one-line summary."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.keras")
    try:
        net.save(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    inside = any(layer.name == "encoder_preprocess" for layer in net.layers)
    how = (
        f"{args.normalization or 'imagenet'} normalization inside"
        if inside
        else ("normalize them as for its training")
    )
    return (
        f"Ported {what}{net.output.shape[-1]} classes, {net.input.shape[-1]} input channels) "
        f"from {args.checkpoint} to {out}: it takes [0, 1] images ({how})"
    )
