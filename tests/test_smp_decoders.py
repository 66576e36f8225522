"""Each smp-parity decoder computes what segmentation_models_pytorch's does.

The reference builds the smp model (ResNet-18, two classes, small decoder widths, decoder
batch-norm statistics and biases randomized, eval mode) and returns its encoder features,
logits and decoder weights. Our model with the same arguments gets those weights through the
decoder's port table (`zoo.port`, table ``smp.<model>``: every smp decoder weight must find
its zoo layer and every zoo decoder weight must be set); a sub-model from our encoder's
feature maps to the logits is fed smp's features, so only the decoders and heads are compared
(tests/test_port_smp.py compares whole ported models).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from torch_ref import requires_reference, run_reference

import zoo
from zoo.port import assign, get_table

pytestmark = pytest.mark.slow  # ~8 s per architecture on 2 cores (reference run included)

ALL = (1, 2, 3, 4, 5)
# zoo model, smp architecture, arguments (zoo names; smp's if different), smp features used
CASES = [
    ("unetplusplus", "UnetPlusPlus", {"decoder_channels": [32, 16, 16, 8, 8]}, None, ALL),
    ("linknet", "Linknet", {}, None, ALL),
    ("pspnet", "PSPNet", {"psp_out_channels": 32}, None, (3,)),
    ("pan", "PAN", {"decoder_channels": 16}, None, (2, 3, 4, 5)),
    (
        "manet",
        "MAnet",
        {"decoder_channels": [32, 16, 16, 8, 8], "pab_channels": 16},
        {"decoder_channels": [32, 16, 16, 8, 8], "decoder_pab_channels": 16},
        ALL,
    ),
    ("deeplabv3", "DeepLabV3", {"decoder_channels": 32}, None, (5,)),
    ("deeplabv3plus", "DeepLabV3Plus", {"decoder_channels": 32}, None, (2, 5)),
    ("upernet", "UPerNet", {"decoder_channels": 32}, None, (2, 3, 4, 5)),
]
# ResNet-18 layer giving smp's feature i (1: stride 2 ... 5: the last stage).
FEATURE_LAYERS = {
    1: "encoder_stem_relu",
    2: "encoder_stage1_block2_relu",
    3: "encoder_stage2_block2_relu",
    4: "encoder_stage3_block2_relu",
    5: "encoder_stage4_block2_relu",
}
# 160 wide: odd maps (5 at stride 32) and PAN's pyramid on a 8x10 map (smp needs >= 8).
SIZE = (128, 160)


@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("name, arch, kwargs, smp_kwargs, used", CASES, ids=[c[0] for c in CASES])
def test_decoder_matches_smp(name, arch, kwargs, smp_kwargs, used):
    images = np.random.default_rng(0).random((2, *SIZE, 3), dtype=np.float32)
    ref = run_reference(
        "smp_decoder", {"x": images}, arch=arch, kwargs=smp_kwargs or kwargs, classes=2
    )
    model = zoo.create_model(name, num_classes=2, encoder="resnet18", **kwargs)

    # smp's decoder and head weights into our layers through the port table: every key
    # used, every variable of ours written.
    state = {k[3:]: ref[k] for k in ref if k.startswith("w__")}
    decoder = [layer for layer in model.layers if not layer.name.startswith("encoder")]
    writes = assign(decoder, state, get_table(f"smp.{name}"))
    assert len(writes) == len(state)
    assert {id(w.variable) for w in writes} == {
        id(v) for v in model.weights if not v.path.startswith("encoder_")
    }

    # Our decoder on smp's encoder features.
    tensors = [model.get_layer(FEATURE_LAYERS[i]).output for i in used]
    head = keras.Model(tensors, model.output)
    logits = np.asarray(head([ref[f"f{i}"] for i in used], training=False))
    expected = ref["logits"]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * scale)
