"""Trainable parameter counts pinned to segmentation_models_pytorch 0.6 (no torch needed).

The numbers are smp's (`getattr(smp, Arch)(encoder, encoder_weights=None, classes=1)`, every
trainable parameter), re-derived by tests/test_parity_smp.py where the reference is
installed. PSPNet's are the weights smp's forward pass uses: its default `encoder_depth=3`
builds the encoder's last two stages without running them.
"""

import pytest
from helpers import count_model_trainable

import zoo

# zoo model -> (resnet34, resnet18) trainable parameters of the smp model, default arguments.
SMP_COUNTS = {
    "unet": (24_436_369, 14_328_209),
    "fpn": (23_155_393, 13_047_233),
    "unetplusplus": (26_078_609, 15_970_449),
    "linknet": (21_771_937, 11_663_777),
    "pspnet": (1_501_217, 836_385),
    "pan": (21_475_816, 11_367_656),
    "manet": (31_783_633, 21_675_473),
    "deeplabv3": (26_007_105, 15_898_945),
    "deeplabv3plus": (22_437_457, 12_329_297),
    "upernet": (29_599_681, 19_491_521),
}


@pytest.mark.parametrize("encoder", ["resnet34", "resnet18"])
@pytest.mark.parametrize("name", sorted(SMP_COUNTS))
def test_default_trainable_params_equal_smp(name, encoder):
    expected = SMP_COUNTS[name][0 if encoder == "resnet34" else 1]
    assert count_model_trainable(name, num_classes=1, encoder=encoder) == expected


def test_pspnet_counts_only_the_stages_it_uses():
    # Hand count: the ResNet-34 stem and first two stages (torchvision: 9,408 + 128 +
    # 3 x 73,984 + 230,144 + 3 x 295,424 = 1,347,904) plus the pyramid (four 128->32 1x1
    # convs; BN on three, bias on the 1x1 grid: 16,384 + 32 + 192), the 256->512 fusion
    # (131,072 + 1,024) and the 3x3 head (4,609).
    encoder = 9_408 + 128 + 3 * 73_984 + 230_144 + 3 * 295_424
    decoder = 4 * 128 * 32 + 32 + 3 * 64 + 256 * 512 + 1_024 + 512 * 9 + 1
    assert encoder + decoder == SMP_COUNTS["pspnet"][0]
    model = zoo.create_model("pspnet", num_classes=1, encoder="resnet34")
    assert not [v.path for v in model.trainable_variables if "stage3" in v.path]
