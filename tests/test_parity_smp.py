"""Parameter parity with segmentation_models_pytorch, computed by the reference itself.

The counts pinned in tests/test_smp_counts.py come from smp 0.6; here the reference
interpreter builds the smp model and counts, so a changed reference is noticed too.
"""

import pytest
from helpers import count_trainable
from torch_ref import requires_reference, run_reference

import zoo

# (zoo model, smp architecture); tests/test_smp_counts.py pins the same counts without torch,
# so the reference re-derivation of the newer ones runs with the slow tests.
SHARED = [
    ("unet", "Unet"),
    ("fpn", "FPN"),
    ("segformer", "Segformer"),
    *(
        pytest.param(name, arch, marks=pytest.mark.slow)
        for name, arch in [
            ("unetplusplus", "UnetPlusPlus"),
            ("linknet", "Linknet"),
            ("pspnet", "PSPNet"),
            ("pan", "PAN"),
            ("manet", "MAnet"),
            ("deeplabv3", "DeepLabV3"),
            ("deeplabv3plus", "DeepLabV3Plus"),
            ("upernet", "UPerNet"),
        ]
    ),
]
# smp builds encoder stages it never runs: compare with the weights its forward pass uses.
UNUSED_STAGES = {"PSPNet"}


@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
@pytest.mark.parametrize("name, arch", SHARED)
def test_trainable_params_equal_smp(name, arch, encoder):
    ours = count_trainable(zoo.create_model(name, num_classes=1, encoder=encoder))
    used_only = arch in UNUSED_STAGES
    theirs = run_reference("smp_param_count", arch=arch, encoder=encoder, used_only=used_only)
    assert ours == int(theirs["count"])
    if used_only:  # and smp's total is larger
        total = run_reference("smp_param_count", arch=arch, encoder=encoder)["count"]
        assert int(total) > ours


@requires_reference("torch", "segmentation_models_pytorch")
@pytest.mark.parametrize(
    "encoder",
    [
        "mit_b0",
        # b0 and b2 are also pinned in tests/test_segformer.py; 13M-82M parameters take
        # 5-15 s each to build on both sides (2 cores).
        *(pytest.param(f"mit_b{i}", marks=pytest.mark.slow) for i in range(1, 6)),
    ],
)
def test_segformer_mit_trainable_params_equal_smp(encoder):
    ours = count_trainable(zoo.create_model("segformer", num_classes=1, encoder=encoder))
    theirs = int(run_reference("smp_param_count", arch="Segformer", encoder=encoder)["count"])
    assert ours == theirs
