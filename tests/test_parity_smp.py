"""Parameter parity with segmentation_models_pytorch, computed by the reference itself.

The counts pinned in tests/test_smp_counts.py come from smp 0.6; here the reference
interpreter builds the smp model and counts, so a changed reference is noticed too.
"""

import pytest
from helpers import assert_params_equal_smp
from torch_ref import requires_reference

# (zoo model, smp architecture); tests/test_smp_counts.py pins the same counts without torch,
# so the reference re-derivation of the newer ones runs with the slow tests.
SHARED = [("unet", "Unet"), ("fpn", "FPN"), ("segformer", "Segformer")]
NEWER = [
    ("unetplusplus", "UnetPlusPlus"),
    ("linknet", "Linknet"),
    ("pspnet", "PSPNet"),
    ("pan", "PAN"),
    ("manet", "MAnet"),
    ("deeplabv3", "DeepLabV3"),
    ("deeplabv3plus", "DeepLabV3Plus"),
    ("upernet", "UPerNet"),
]
# smp builds encoder stages it never runs: compare with the weights its forward pass uses.
UNUSED_STAGES = {"PSPNet"}


def specs(models: list[tuple[str, str]]) -> list[tuple]:
    """Both ResNet encoders under each architecture; used parameters where smp has unused."""
    return [
        (name, arch, encoder, {"used_only": arch in UNUSED_STAGES})
        for name, arch in models
        for encoder in ("resnet18", "resnet34")
    ]


@requires_reference("torch", "segmentation_models_pytorch")
def test_trainable_params_equal_smp():
    # MiT-B0: SegFormer's own encoder (B1-B5 below; b0 and b2 also pinned in test_segformer.py).
    assert_params_equal_smp([*specs(SHARED), ("segformer", "Segformer", "mit_b0")])


@pytest.mark.slow  # 16 models and MiT-B1..B5 (13M-82M parameters) built on both sides
@requires_reference("torch", "segmentation_models_pytorch")
def test_newer_architectures_and_larger_mits_have_smps_trainable_params():
    newer = specs(NEWER)
    mits = [("segformer", "Segformer", f"mit_b{i}") for i in range(1, 6)]
    # ... and smp's models with unused stages hold more than they use (their total counts).
    partial = [i for i, s in enumerate(newer) if s[3]["used_only"]]
    totals = [{"arch": newer[i][1], "encoder": newer[i][2]} for i in partial]
    counts = assert_params_equal_smp([*newer, *mits], also=totals)
    used = [counts[i] for i in partial]
    assert all(t > u for t, u in zip(counts[-len(partial) :], used)), (counts, used)
