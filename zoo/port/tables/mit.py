"""Mix Transformer (MiT-B0..B5) and SegFormer: smp / original and Hugging Face layouts.

Encoder tables (relative to the encoder's module and our encoder's name prefix):

* ``"mit"``: the original NVlabs names, which segmentation_models_pytorch's ``mit_b*``
  encoders keep (``patch_embed1.proj``, ``block1.0.attn.q`` / ``.kv`` / ``.sr``, ``norm1``;
  the ImageNet files ``smp-hub/mit_b*.imagenet``, ``encoder.`` in an smp ``Segformer``). Its
  fused ``kv`` projection fills our ``attn_k`` and ``attn_v`` (one half each); the ImageNet
  classifier ``head`` is ignored.
* ``"mit.transformers"``: Hugging Face transformers' SegFormer encoder
  (``patch_embeddings.0.proj``, ``block.0.0.attention.self.query``, ``layer_norm.0``), under
  ``encoder.`` in ``SegformerModel`` and ``segformer.encoder.`` in
  ``SegformerForSemanticSegmentation`` / ``SegformerForImageClassification`` files (what
  ``save_pretrained`` writes).

Decoder tables (the SegFormer decoder and head of our `segformer`): ``"smp.segformer"``
(``decoder.mlp_stage.{i}.linear``, ``decoder.fuse_stage.{0,1}``, ``segmentation_head.0``) and
``"transformers.segformer"`` (``decode_head.linear_c.{i}.proj``, ``linear_fuse``,
``batch_norm``, ``classifier``). Our `AllMLPFuse` holds every level's projection and the fuse
convolution, so its rule maps each variable to its own module.

Numerics: transformers uses layer-norm epsilon 1e-5 in the blocks and after each stage where
the original and smp use 1e-6 (ours); features agree to ~1e-5 relative
(tests/test_segformer.py).
"""

from zoo.port.mapping import Rule, Table, register_table

_BLOCK = r"stage(\d)_block(\d+)_"

register_table(
    "mit",
    Table(
        "mit (original / smp layout)",
        (
            Rule(r"stage(\d)_patch_embed_proj", "patch_embed{1}.proj"),
            Rule(r"stage(\d)_patch_embed_norm", "patch_embed{1}.norm"),
            Rule(_BLOCK + "norm(\\d)", "block{1}.{2-1}.norm{3}"),
            Rule(_BLOCK + "attn_q", "block{1}.{2-1}.attn.q"),
            Rule(_BLOCK + "attn_k", "block{1}.{2-1}.attn.kv", kind="dense_first_half"),
            Rule(_BLOCK + "attn_v", "block{1}.{2-1}.attn.kv", kind="dense_second_half"),
            Rule(_BLOCK + "attn_(sr|norm|proj)", "block{1}.{2-1}.attn.{3}"),
            Rule(_BLOCK + "mlp_(fc1|fc2)", "block{1}.{2-1}.mlp.{3}"),
            Rule(_BLOCK + "mlp_dwconv", "block{1}.{2-1}.mlp.dwconv.dwconv"),
            Rule(r"stage(\d)_norm", "norm{1}"),
        ),
        ignore=(r"head\..*",),
    ),
)

_HF_BLOCK = "block.{1-1}.{2-1}."

register_table(
    "mit.transformers",
    Table(
        "mit (Hugging Face transformers layout)",
        (
            Rule(r"stage(\d)_patch_embed_proj", "patch_embeddings.{1-1}.proj"),
            Rule(r"stage(\d)_patch_embed_norm", "patch_embeddings.{1-1}.layer_norm"),
            Rule(_BLOCK + "norm(\\d)", _HF_BLOCK + "layer_norm_{3}"),
            Rule(_BLOCK + "attn_q", _HF_BLOCK + "attention.self.query"),
            Rule(_BLOCK + "attn_k", _HF_BLOCK + "attention.self.key"),
            Rule(_BLOCK + "attn_v", _HF_BLOCK + "attention.self.value"),
            Rule(_BLOCK + "attn_sr", _HF_BLOCK + "attention.self.sr"),
            Rule(_BLOCK + "attn_norm", _HF_BLOCK + "attention.self.layer_norm"),
            Rule(_BLOCK + "attn_proj", _HF_BLOCK + "attention.output.dense"),
            Rule(_BLOCK + "mlp_fc(\\d)", _HF_BLOCK + "mlp.dense{3}"),
            Rule(_BLOCK + "mlp_dwconv", _HF_BLOCK + "mlp.dwconv.dwconv"),
            Rule(r"stage(\d)_norm", "layer_norm.{1-1}"),
        ),
    ),
)


# === SegFormer decoders: AllMLPFuse variables -> per-level modules ===


def _fuse_smp(layer) -> dict[str, tuple[str, str]]:
    """smp's ``mlp_stage`` counts the levels deepest first, as our `AllMLPFuse.strides`."""
    params = {"fuse_kernel": ("fuse_stage.0.weight", "conv")}
    for i, stride in enumerate(layer.strides):
        params[f"linear{stride}_kernel"] = (f"mlp_stage.{i}.linear.weight", "dense")
        params[f"linear{stride}_bias"] = (f"mlp_stage.{i}.linear.bias", "identity")
    return params


def _fuse_transformers(layer) -> dict[str, tuple[str, str]]:
    """transformers' ``linear_c`` counts the encoder's levels finest first."""
    params = {"fuse_kernel": ("linear_fuse.weight", "conv")}
    for i, stride in enumerate(sorted(layer.strides)):
        params[f"linear{stride}_kernel"] = (f"linear_c.{i}.proj.weight", "dense")
        params[f"linear{stride}_bias"] = (f"linear_c.{i}.proj.bias", "identity")
    return params


register_table(
    "smp.segformer",
    Table(
        "smp Segformer decoder",
        (
            Rule(r"decoder_fuse", "decoder", kind=_fuse_smp),
            Rule(r"decoder_fuse_bn", "decoder.fuse_stage.1"),
            Rule(r"head_conv", "segmentation_head.0"),
        ),
    ),
)

register_table(
    "transformers.segformer",
    Table(
        "transformers SegFormer decode head",
        (
            Rule(r"decoder_fuse", "decode_head", kind=_fuse_transformers),
            Rule(r"decoder_fuse_bn", "decode_head.batch_norm"),
            Rule(r"head_conv", "decode_head.classifier"),
        ),
    ),
)
