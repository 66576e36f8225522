"""Published Mix Transformer / SegFormer checkpoints into `mit_b*` encoders and `segformer`.

Two checkpoint layouts, read from ``.safetensors`` files with the `safetensors` NumPy API (no
torch) or given as ``{key: array}`` dicts:

* ``"smp"``: segmentation_models_pytorch's ``mit_b*`` encoders, which keep the original
  NVlabs names (``patch_embed1.proj``, ``block1.0.attn.q`` / ``.kv`` / ``.sr``, ``norm1``;
  the ImageNet files ``smp-hub/mit_b*.imagenet``), optionally under ``encoder.`` (a whole smp
  ``Segformer``: ``decoder.mlp_stage.{i}.linear``, ``decoder.fuse_stage.{0,1}``,
  ``segmentation_head.0``).
* ``"transformers"``: Hugging Face's SegFormer in its published key names
  (``encoder.patch_embeddings.0.proj``, ``encoder.block.0.0.attention.self.query``,
  ``encoder.layer_norm.0``, ``decode_head.linear_c.0.proj``, ``decode_head.linear_fuse``,
  ``decode_head.batch_norm``, ``decode_head.classifier``), with or without the ``segformer.``
  prefix: ``SegformerModel``, ``SegformerForImageClassification`` (``nvidia/mit-b*``) and
  ``SegformerForSemanticSegmentation`` (``nvidia/segformer-b*-finetuned-*``). This is also
  what ``save_pretrained`` of transformers 5 writes (it renames its modules back).

The mapping is data: `ENCODER_TABLE` and `DECODER_TABLE` map our layer names (regular
expressions) to each layout's module path (a template), and `KINDS` says, per kind of layer,
which parameter of the module each of our variables takes and how its layout changes
(``Linear.weight`` (out, in) -> ``Dense.kernel`` (in, out); ``Conv2d.weight`` OIHW -> HWIO;
the original fused ``kv`` projection split into our ``_k`` and ``_v``); `FUSE_VARIABLES`
does it per variable for the decoder's `AllMLPFuse`, which holds the per-level projections
and the fuse convolution. `load_mit_weights`
checks the whole plan (every variable found, every key used, every shape equal) before it
writes anything.

Numerics: transformers' SegFormer uses layer-norm epsilon 1e-5 in the blocks and after each
stage where the original and smp use 1e-6 (ours); the difference is far below float32
training noise (features agree to ~1e-5 relative, tests/test_segformer.py).

Input scale: the published weights expect ImageNet-normalized images; our models take
[0, 1] images, so a model for them is built with ``encoder_kwargs={"normalization":
"imagenet"}`` (`segformer_from_checkpoint` does that).

Example:

```python
from zoo.port.mit import load_mit_weights, segformer_from_checkpoint

model = segformer_from_checkpoint("segformer-b0-finetuned-ade-512-512.safetensors")
model.save("segformer_b0_ade.keras")

unet = zoo.create_model("unet", encoder="mit_b2", encoder_kwargs={"normalization": "imagenet"},
                        decoder_channels=(256, 128, 64, 32))
load_mit_weights(unet, "mit_b2.safetensors")  # encoder only
```
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LAYOUTS = ("smp", "transformers")


class PortError(ValueError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped key)."""


# === Layout transforms (theirs -> ours); they also see our variable's shape ===


def _identity(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    return x


def _conv(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """``Conv2d.weight`` (out, in, kh, kw) -> ``Conv2D.kernel`` (kh, kw, in, out)."""
    return np.transpose(x, (2, 3, 1, 0)) if x.ndim == 4 else x


def _depthwise(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """Depthwise ``Conv2d.weight`` (C, 1, kh, kw) -> ``DepthwiseConv2D.kernel`` (kh, kw, C, 1)."""
    return np.transpose(x, (2, 3, 0, 1)) if x.ndim == 4 else x


def _dense(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """``Linear.weight`` (out, in) -> ``Dense.kernel`` (in, out)."""
    return np.transpose(x) if x.ndim == 2 else x


def _half(index: int) -> Callable[[np.ndarray, tuple[int, ...]], np.ndarray]:
    """Keys (index 0) or values (1) of the fused ``kv`` projection: output rows
    ``[index * C, (index + 1) * C)`` of ``kv.weight`` (2C, C_in) / ``kv.bias`` (2C,)."""

    def take(x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
        units = ours[-1]
        if x.shape[0] != 2 * units:
            return x  # the shape check names both shapes
        part = x[index * units : (index + 1) * units]
        return _dense(part, ours)

    return take


# Per kind of our layer: our variable name -> (their parameter name, transform).
KINDS: dict[str, dict[str, tuple[str, Callable]]] = {
    "conv": {"kernel": ("weight", _conv), "bias": ("bias", _identity)},
    "depthwise": {"kernel": ("weight", _depthwise), "bias": ("bias", _identity)},
    "dense": {"kernel": ("weight", _dense), "bias": ("bias", _identity)},
    "dense_keys": {"kernel": ("weight", _half(0)), "bias": ("bias", _half(0))},
    "dense_values": {"kernel": ("weight", _half(1)), "bias": ("bias", _half(1))},
    "norm": {"gamma": ("weight", _identity), "beta": ("bias", _identity)},
    "batch_norm": {
        "gamma": ("weight", _identity),
        "beta": ("bias", _identity),
        "moving_mean": ("running_mean", _identity),
        "moving_variance": ("running_var", _identity),
    },
}


@dataclass(frozen=True)
class Row:
    """Our layer (regex over its name, after the encoder prefix for encoder rows) -> the module
    holding its parameters in each layout (a `str.format` template: ``{s}``/``{b}`` stage and
    block from 1, ``{s0}``/``{b0}`` from 0), and the kind per layout (`KINDS`, or
    ``"all_mlp_fuse"``: `FUSE_VARIABLES`)."""

    ours: str
    smp: str
    transformers: str
    kind: str | tuple[str, str]

    def kind_for(self, layout: str) -> str:
        if isinstance(self.kind, str):
            return self.kind
        return self.kind[LAYOUTS.index(layout)]


_BLOCK = r"stage(?P<s>\d+)_block(?P<b>\d+)_"
_HF_BLOCK = "encoder.block.{s0}.{b0}."

ENCODER_TABLE: tuple[Row, ...] = (
    Row(r"stage(?P<s>\d+)_patch_embed_proj", "patch_embed{s}.proj",
        "encoder.patch_embeddings.{s0}.proj", "conv"),
    Row(r"stage(?P<s>\d+)_patch_embed_norm", "patch_embed{s}.norm",
        "encoder.patch_embeddings.{s0}.layer_norm", "norm"),
    Row(_BLOCK + "norm1", "block{s}.{b0}.norm1", _HF_BLOCK + "layer_norm_1", "norm"),
    Row(_BLOCK + "attn_q", "block{s}.{b0}.attn.q", _HF_BLOCK + "attention.self.query",
        "dense"),
    Row(_BLOCK + "attn_k", "block{s}.{b0}.attn.kv", _HF_BLOCK + "attention.self.key",
        ("dense_keys", "dense")),
    Row(_BLOCK + "attn_v", "block{s}.{b0}.attn.kv", _HF_BLOCK + "attention.self.value",
        ("dense_values", "dense")),
    Row(_BLOCK + "attn_sr", "block{s}.{b0}.attn.sr", _HF_BLOCK + "attention.self.sr", "conv"),
    Row(_BLOCK + "attn_norm", "block{s}.{b0}.attn.norm",
        _HF_BLOCK + "attention.self.layer_norm", "norm"),
    Row(_BLOCK + "attn_proj", "block{s}.{b0}.attn.proj", _HF_BLOCK + "attention.output.dense",
        "dense"),
    Row(_BLOCK + "norm2", "block{s}.{b0}.norm2", _HF_BLOCK + "layer_norm_2", "norm"),
    Row(_BLOCK + "mlp_fc1", "block{s}.{b0}.mlp.fc1", _HF_BLOCK + "mlp.dense1", "dense"),
    Row(_BLOCK + "mlp_dwconv", "block{s}.{b0}.mlp.dwconv.dwconv",
        _HF_BLOCK + "mlp.dwconv.dwconv", "depthwise"),
    Row(_BLOCK + "mlp_fc2", "block{s}.{b0}.mlp.fc2", _HF_BLOCK + "mlp.dense2", "dense"),
    Row(r"stage(?P<s>\d+)_norm", "norm{s}", "encoder.layer_norm.{s0}", "norm"),
)  # fmt: skip

DECODER_TABLE: tuple[Row, ...] = (
    Row(r"decoder_fuse", "decoder", "decode_head", "all_mlp_fuse"),
    Row(r"decoder_fuse_bn", "decoder.fuse_stage.1", "decode_head.batch_norm", "batch_norm"),
    Row(r"head_conv", "segmentation_head.0", "decode_head.classifier", "conv"),
)

# `zoo.layers.AllMLPFuse` holds the per-level projections and the fuse convolution: our
# variable name (regex) -> (smp parameter, transformers parameter, transform) under the row's
# module; ``{deep}`` is the level's index deepest first (smp), ``{level}`` log2(stride / 4)
# (transformers, finest first).
FUSE_VARIABLES: tuple[tuple[str, str, str, Callable], ...] = (
    (r"linear(?P<stride>\d+)_kernel", "mlp_stage.{deep}.linear.weight",
     "linear_c.{level}.proj.weight", _dense),
    (r"linear(?P<stride>\d+)_bias", "mlp_stage.{deep}.linear.bias", "linear_c.{level}.proj.bias",
     _identity),
    (r"fuse_kernel", "fuse_stage.0.weight", "linear_fuse.weight", _conv),
)  # fmt: skip

# Where each layout keeps its decoder, and the heads we have no counterpart for (ImageNet
# classifiers, smp's auxiliary classification head) plus PyTorch bookkeeping.
DECODER_PREFIXES = {"smp": ("decoder.", "segmentation_head."), "transformers": ("decode_head.",)}
IGNORED = (
    r"(.*\.)?num_batches_tracked",
    r"head\..*",
    r"classifier\..*",
    r"classification_head\..*",
)

# The first key each layout's encoder has; what precedes it is the file's encoder prefix.
_ANCHORS = {
    "smp": re.compile(r"^(.*?)patch_embed1\.proj\.weight$"),
    "transformers": re.compile(r"^(.*?)encoder\.patch_embeddings\.0\.proj\.weight$"),
}


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: array}`` of a ``.safetensors`` file (NumPy API: no torch needed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}")
    if path.suffix.lower() != ".safetensors":
        raise ValueError(
            f"Cannot read checkpoint {path}: expected a .safetensors file (convert a torch "
            f"state dict with safetensors.torch.save_file). Received suffix {path.suffix!r}"
        )
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def detect_layout(state: Mapping[str, Any], source: str = "the checkpoint") -> tuple[str, str]:
    """(layout, encoder key prefix) of a MiT/SegFormer state dict, or a `PortError`."""
    for layout, anchor in _ANCHORS.items():
        for key in state:
            match = anchor.match(key)
            if match:
                return layout, match.group(1)
    raise PortError(
        f"{source} is not a Mix Transformer / SegFormer checkpoint: it has no key "
        "'patch_embed1.proj.weight' (smp / original layout) or "
        "'encoder.patch_embeddings.0.proj.weight' (transformers layout), with any prefix. "
        f"First keys: {list(state)[:3]}"
    )


def _layers(target: Any) -> list[Any]:
    """Every layer of `target` (a model, nested layers included) that owns variables."""
    out = []
    for layer in target._flatten_layers(include_self=False, recursive=True):
        own = list(getattr(layer, "_trainable_variables", [])) + list(
            getattr(layer, "_non_trainable_variables", [])
        )
        if own:
            out.append((layer, own))
    return out


def _module_for(row: Row, match: re.Match, layout: str) -> str:
    groups = {k: int(v) for k, v in match.groupdict().items()}
    fields = {}
    if "s" in groups:
        fields.update(s=groups["s"], s0=groups["s"] - 1)
    if "b" in groups:
        fields.update(b=groups["b"], b0=groups["b"] - 1)
    return getattr(row, layout).format(**fields)


def _parameters(row: Row, layer: Any, layout: str) -> dict[str, tuple[str, Callable]]:
    """Our variable name -> (their parameter name under the row's module, transform)."""
    kind = row.kind_for(layout)
    if kind != "all_mlp_fuse":
        return KINDS[kind]
    strides = list(layer.strides)
    out = {}
    for variable in layer.weights:
        name = variable.name.split("/")[-1]
        for pattern, smp, transformers, transform in FUSE_VARIABLES:
            match = re.fullmatch(pattern, name)
            if match:
                stride = int(match.groupdict().get("stride") or 0)
                fields = {}
                if stride:
                    fields = {"deep": strides.index(stride), "level": int(math.log2(stride / 4))}
                template = smp if layout == "smp" else transformers
                out[name] = (template.format(**fields), transform)
    return out


def plan(
    target: Any,
    state: Mapping[str, np.ndarray],
    *,
    encoder_name: str = "encoder",
    decoder: bool | None = None,
    source: str = "the checkpoint",
) -> list[tuple[Any, str, np.ndarray]]:
    """The writes `load_mit_weights` would make, as (our variable, their key, value)."""
    layout, prefix = detect_layout(state, source)
    layers = _layers(target)
    decoder_keys = [k for k in state if k.startswith(DECODER_PREFIXES[layout])]
    has_decoder_layers = any(layer.name == "decoder_fuse" for layer, _ in layers)
    if decoder is None:
        decoder = bool(decoder_keys) and has_decoder_layers
    if decoder and not decoder_keys:
        raise PortError(
            f"{source} has no decoder (no key starting with {DECODER_PREFIXES[layout]}): "
            "load it with decoder=False (encoder weights only)"
        )
    if decoder and not has_decoder_layers:
        raise PortError(
            "decoder=True, but the model has no SegFormer decoder (no layer 'decoder_fuse')"
        )
    enc = re.escape(encoder_name + "_")
    rows = [(re.compile(enc + r.ours), r, prefix) for r in ENCODER_TABLE]
    if decoder:
        rows += [(re.compile(r.ours), r, "") for r in DECODER_TABLE]
    problems, writes, used = [], [], set()
    mapped_layers = 0
    for layer, variables in layers:
        found = next(
            ((r, p, m) for pattern, r, p in rows if (m := pattern.fullmatch(layer.name))), None
        )
        if found is None:
            if layer.name.startswith(encoder_name + "_stage"):
                problems.append(f"our layer {layer.name!r} has no row in the MiT table")
            continue  # other layers (another decoder, the input normalization) stay as they are
        row, key_prefix, match = found
        mapped_layers += 1
        module = key_prefix + _module_for(row, match, layout)
        params = _parameters(row, layer, layout)
        for variable in variables:
            name = variable.name.split("/")[-1]
            if name not in params:
                problems.append(f"our variable {variable.path!r} has no row in the MiT table")
                continue
            parameter, transform = params[name]
            key = f"{module}.{parameter}"
            if key not in state:
                problems.append(
                    f"missing key {key!r} in {source} (for our variable {variable.path!r})"
                )
                continue
            used.add(key)
            raw = np.asarray(state[key])
            ours = tuple(int(d) for d in variable.shape)
            value = transform(raw, ours)
            if value.shape != ours:
                problems.append(
                    f"shape mismatch for key {key!r}: {source} has {raw.shape}, our variable "
                    f"{variable.path!r} has {ours}" + _hint(variable.path, raw.shape)
                )
                continue
            writes.append((variable, key, value))
    if not mapped_layers:
        problems.append(f"the model has no Mix Transformer layers named {encoder_name}_stage*")
    ignored = [re.compile(p) for p in IGNORED]
    extra = [
        k
        for k in state
        if k not in used
        and not any(p.fullmatch(k) for p in ignored)
        and not (not decoder and k.startswith(DECODER_PREFIXES[layout]))
    ]
    if extra:
        problems.append(
            f"unexpected key {extra[0]!r} in {source}: no variable of the model takes it "
            "(a deeper variant's weights, e.g. mit_b2 into mit_b0?)"
            + (f" ({len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    if problems:
        more = f" [{len(problems) - 1} more problems]" if len(problems) > 1 else ""
        raise PortError(f"Cannot load {source} ({layout} layout): {problems[0]}{more}")
    return writes


def _hint(path: str, theirs: tuple[int, ...]) -> str:
    if path.startswith("head_conv/kernel"):
        return f" (build the model with num_classes={theirs[0]})"
    if path.startswith("decoder_"):
        return f" (build the model with decoder_channels={theirs[0]})"
    return ""


def load_mit_weights(
    target: Any,
    checkpoint: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    encoder_name: str = "encoder",
    decoder: bool | None = None,
) -> list[tuple[str, str]]:
    """Load a MiT / SegFormer checkpoint into `target`, all or nothing.

    Args:
        target: a model with a `mit_b*` encoder (any decoder), a standalone
            ``zoo.create_encoder("mit_b*")`` model, or a `segformer` model.
        checkpoint: a ``.safetensors`` path or a ``{key: array}`` dict, in the smp or
            transformers layout (see the module docstring; detected from the keys).
        encoder_name: the encoder's layer-name prefix (builders' `name`, "encoder").
        decoder: also load the SegFormer decoder and head. None: when the checkpoint has
            them and `target` is a `segformer`; an encoder-only load leaves the rest as is.

    Returns:
        ``(our variable path, their key)`` of every write.

    Raises:
        PortError: one line naming the first missing, unexpected or mis-shaped key (with both
            shapes and the argument to change); nothing is written then.
    """
    source = "the checkpoint"
    if not isinstance(checkpoint, Mapping):
        source = str(checkpoint)
        checkpoint = read_checkpoint(checkpoint)
    writes = plan(target, checkpoint, encoder_name=encoder_name, decoder=decoder, source=source)
    for variable, _, value in writes:
        variable.assign(value.astype(variable.dtype, copy=False))
    return [(variable.path, key) for variable, key, _ in writes]


def checkpoint_architecture(
    state: Mapping[str, np.ndarray], source: str = "the checkpoint"
) -> dict[str, Any]:
    """The `segformer` constructor arguments a checkpoint was trained with.

    ``encoder`` (the `mit_b*` variant with these widths and depths; non-standard ones get
    `embed_dims`/`depths`, and reductions other than (8, 4, 2, 1) `sr_ratios`, in
    ``encoder_kwargs``), ``encoder_kwargs`` (with ImageNet input normalization), and, when
    it has a decoder, ``num_classes`` and ``decoder_channels``. The number of heads is not
    in the weights: the published variants' (1, 2, 5, 8) is assumed.
    """
    from zoo.encoders.mit import VARIANTS

    layout, prefix = detect_layout(state, source)
    from zoo.encoders.mit import SR_RATIOS

    if layout == "smp":
        patch, block = prefix + "patch_embed{s}.proj.weight", r"block{s}\.(\d+)\."
        sr = prefix + "block{s}.0.attn.sr.weight"
    else:
        patch = prefix + "encoder.patch_embeddings.{s0}.proj.weight"
        block = r"encoder\.block\.{s0}\.(\d+)\."
        sr = prefix + "encoder.block.{s0}.0.attention.self.sr.weight"
    dims, depths, srs = [], [], []
    for s in range(1, 5):
        dims.append(int(state[patch.format(s=s, s0=s - 1)].shape[0]))
        pattern = re.compile(re.escape(prefix) + block.format(s=s, s0=s - 1))
        depths.append(len({m.group(1) for k in state if (m := pattern.match(k))}))
        kernel = state.get(sr.format(s=s, s0=s - 1))
        srs.append(1 if kernel is None else int(kernel.shape[-1]))
    kwargs: dict[str, Any] = {"normalization": "imagenet"}
    names = [n for n, (d, b) in VARIANTS.items() if (list(d), list(b)) == [dims, depths]]
    if names:
        encoder = names[0]
    else:
        encoder = "mit_b0"
        kwargs.update(embed_dims=tuple(dims), depths=tuple(depths))
    if tuple(srs) != SR_RATIOS:
        kwargs["sr_ratios"] = tuple(srs)
    arch: dict[str, Any] = {"encoder": encoder, "encoder_kwargs": kwargs}
    head = {"smp": "segmentation_head.0.weight", "transformers": "decode_head.classifier.weight"}
    if head[layout] in state:
        weight = state[head[layout]]
        arch.update(num_classes=int(weight.shape[0]), decoder_channels=int(weight.shape[1]))
    return arch


def segformer_from_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, np.ndarray], **overrides: Any
) -> Any:
    """A `segformer` built to a checkpoint's architecture and loaded with its weights.

    Args:
        checkpoint: ``.safetensors`` path or ``{key: array}`` (smp or transformers layout).
            An encoder-only checkpoint gives a model with a random decoder.
        **overrides: other `segformer` arguments (``input_shape``, ``activation``, or
            ``num_classes`` for an encoder-only checkpoint); ``encoder_kwargs`` are merged
            into the inferred ones (``num_heads`` for non-standard widths: the weights do not
            determine the number of heads; the published variants use (1, 2, 5, 8)).
    """
    import zoo

    source = "the checkpoint"
    if not isinstance(checkpoint, Mapping):
        source = str(checkpoint)
        checkpoint = read_checkpoint(checkpoint)
    arch = checkpoint_architecture(checkpoint, source)
    # encoder_kwargs merge: e.g. num_heads, which the weights do not determine
    kwargs = {**arch["encoder_kwargs"], **(overrides.pop("encoder_kwargs", None) or {})}
    arch = {**arch, **overrides, "encoder_kwargs": kwargs}
    model = zoo.create_model("segformer", **arch)
    writes = plan(model, checkpoint, source=source)
    for variable, _, value in writes:
        variable.assign(value.astype(variable.dtype, copy=False))
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.port.mit",
        description="Convert a MiT / SegFormer .safetensors checkpoint (smp or transformers "
        "layout) into a segformer .keras model that takes [0, 1] images.",
    )
    parser.add_argument("checkpoint", help="the .safetensors file")
    parser.add_argument("out", help="the .keras file to write")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="for an encoder-only checkpoint (default 1)")  # fmt: skip
    args = parser.parse_args(argv)
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = segformer_from_checkpoint(args.checkpoint, **overrides)
    model.save(args.out)
    config = model.get_config()
    print(
        f"Wrote {args.out}: segformer, encoder {config['encoder']}, "
        f"{config['num_classes']} classes, decoder_channels {config['decoder_channels']}"
    )


if __name__ == "__main__":
    main()
