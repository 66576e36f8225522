"""``python -m zoo.port smp``: segmentation_models_pytorch models ported whole.

Parity: a random-init smp model (reference interpreter) and its port give the same logits on
the same [0, 1] image (smp's ImageNet normalization moved into the ported model).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_pretrained import random_torchvision_state
from torch_ref import reference_python, requires_reference, run_reference

from zoo.port.__main__ import main
from zoo.port.smp import port_smp
from zoo.saving import load_model

ROOT = Path(__file__).resolve().parents[1]


def port(tmp_path, checkpoint, model, *extra, name=None):
    out = tmp_path / f"{name or model}.keras"
    rc = main(["smp", "--checkpoint", str(checkpoint), "--model", model, "--out", str(out), *extra])
    assert rc == 0
    return load_model(out)


def check_parity(tmp_path, monkeypatch, specs, size, rtol=1e-4, via_cli=False):
    """Random smp models (reference interpreter) -> `zoo.port smp` -> equal logits.

    specs: (smp arch, zoo model, checkpoint suffix, classes, encoder, smp kwargs[, smp
    options]) tuples; the options (smp arguments the weights do not tell) go to smp and to
    the port (``--smp-arg``). rtol: the largest difference allowed, relative to the largest
    logit (at least 1). via_cli: port with ``python -m zoo.port smp`` and load the saved
    .keras file (the architectures' tests here); otherwise `port_smp` in process, which is what
    the command runs before it saves: the encoder families' tests need no save and reload,
    which cost a third of their time (each family's saving is tested on its own U-Net).
    """
    monkeypatch.setenv("SEGZOO_TORCH_PYTHON", reference_python())
    images = np.random.default_rng(0).random((2, *size, 3), dtype=np.float32)
    specs = [(*spec, {}) if len(spec) == 6 else spec for spec in specs]
    models = [
        {
            "arch": arch,
            "encoder": encoder,
            "classes": classes,
            "kwargs": {**kwargs, **options},
            "path": str(tmp_path / f"{arch}{suffix}"),
        }
        for arch, _, suffix, classes, encoder, kwargs, options in specs
    ]
    theirs = run_reference("smp_model", {"images": images}, models=models)
    for i, (arch, model, _, classes, encoder, _, options) in enumerate(specs):
        path = models[i]["path"]
        if via_cli:
            extra = [a for k, v in options.items() for a in ("--smp-arg", f"{k}={v!r}")]
            ours = port(tmp_path, path, model, "--encoder", encoder, *extra, name=Path(path).stem)
        else:
            ours = port_smp(path, model, encoder, options=options or None)
        assert ours.output.shape[-1] == classes  # read from the weights
        want = theirs[f"logits_{i}"]
        got = np.asarray(ours(images, training=False))
        assert got.shape == want.shape
        assert np.abs(want).max() > 0.1  # not trivially zero
        diff = float(np.abs(got - want).max())
        print(f"{arch} {encoder}: max |diff| {diff:.2e}, max |logit| {np.abs(want).max():.2f}")
        assert diff < rtol * max(1.0, float(np.abs(want).max())), (arch, diff)


@pytest.mark.slow  # smp models built and run in a torch interpreter: half a minute
@requires_reference("torch", "segmentation_models_pytorch")
def test_small_smp_models_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 3, "resnet18", {"decoder_channels": (32, 16, 16, 8, 8)}),
        (
            "FPN",
            "fpn",
            ".safetensors",
            3,
            "resnet18",
            {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
        ),
        # A CNN encoder: five levels (stride 2 too) into the all-MLP decoder.
        ("Segformer", "segformer", ".pth", 3, "resnet18", {"decoder_segmentation_channels": 32}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (64, 96), via_cli=True)


@pytest.mark.slow  # full ResNet-34 models, ~1 min on 2 cores
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_resnet34_models_port_with_equal_logits(tmp_path, monkeypatch):
    specs = [
        ("Unet", "unet", ".pth", 2, "resnet34", {}),
        ("FPN", "fpn", ".pth", 2, "resnet34", {}),
    ]
    check_parity(tmp_path, monkeypatch, specs, (96, 128))


# The eight smp-parity architectures, small (resnet18, narrow decoders): 128x160 images, so
# that smp's PAN (which needs its stride-16 map to be 8x8 at least) runs and the stride-32
# maps are odd (4x5). The options that the weights do not tell go through --smp-arg.
PARITY_SPECS = [
    (
        "UnetPlusPlus",
        "unetplusplus",
        ".pth",
        2,
        "resnet18",
        {"decoder_channels": (32, 16, 16, 8, 8)},
    ),
    ("Linknet", "linknet", ".safetensors", 2, "resnet18", {}),
    ("PSPNet", "pspnet", ".pth", 2, "resnet18", {"psp_out_channels": 32}),
    ("PAN", "pan", ".pth", 2, "resnet18", {"decoder_channels": 16}),
    (
        "PAN",
        "pan",
        "_nearest.pth",
        3,
        "resnet18",
        {"decoder_channels": 16},
        {"decoder_interpolation": "nearest"},
    ),
    (
        "MAnet",
        "manet",
        ".pth",
        2,
        "resnet18",
        {"decoder_channels": (32, 16, 16, 8, 8), "decoder_pab_channels": 16},
    ),
    ("DeepLabV3", "deeplabv3", ".pth", 2, "resnet18", {"decoder_channels": 32}),
    (
        "DeepLabV3Plus",
        "deeplabv3plus",
        ".pth",
        2,
        "resnet18",
        {"decoder_channels": 32},
        {"encoder_output_stride": 8, "decoder_atrous_rates": (6, 12, 18)},
    ),
    ("UPerNet", "upernet", ".pth", 2, "resnet18", {"decoder_channels": 32}),
]


@pytest.mark.slow  # eight smp models built, ported and run: ~1-2 min
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_parity_architectures_port_with_equal_logits(tmp_path, monkeypatch):
    check_parity(tmp_path, monkeypatch, PARITY_SPECS, (128, 160), via_cli=True)


@pytest.mark.slow  # eight full ResNet-34 models at smp's defaults, ~2 min on 2 cores
@requires_reference("torch", "segmentation_models_pytorch")
def test_smp_parity_architectures_resnet34_defaults_port_with_equal_logits(tmp_path, monkeypatch):
    archs = [
        ("UnetPlusPlus", "unetplusplus"),
        ("Linknet", "linknet"),
        ("PSPNet", "pspnet"),
        ("PAN", "pan"),
        ("MAnet", "manet"),
        ("DeepLabV3", "deeplabv3"),
        ("DeepLabV3Plus", "deeplabv3plus"),
        ("UPerNet", "upernet"),
    ]
    specs = [(arch, model, ".pth", 1, "resnet34", {}) for arch, model in archs]
    # Full ResNet-34s: oneDNN and torch sum in different orders through 34 layers (the
    # encoder alone drifts by 1.4e-5 of its largest stride-32 feature, test_pretrained.py),
    # and MAnet's attention blocks carry that drift to logits of ~2 (2.1e-4 measured). A
    # weight that lands in the wrong place is off by O(0.1) or more.
    check_parity(tmp_path, monkeypatch, specs, (128, 128), rtol=3e-4)


# === Bad input: one line, exit status 2 ===


def run_cli(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def torchvision_checkpoint(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(random_torchvision_state("resnet18", width=8), str(path))
    return path


def test_unknown_model_is_one_line(tmp_path, capsys):
    ckpt = torchvision_checkpoint(tmp_path)
    rc, err = run_cli(
        capsys,
        "smp",
        "--checkpoint",
        str(ckpt),
        "--model",
        "deeplab_lite",  # ours only: no smp counterpart
        "--out",
        str(tmp_path / "o.keras"),
    )
    assert rc == 1 and "\n" not in err
    assert "model='deeplab_lite'" in err
    assert "'deeplabv3', 'deeplabv3plus', 'dpt', 'fpn', 'linknet', 'manet', 'pan', 'pspnet'" in err
    assert "'segformer', 'unet', 'unetplusplus', 'upernet'" in err


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    rc, err = run_cli(
        capsys,
        "smp",
        "--checkpoint",
        str(tmp_path / "nope.pth"),
        "--model",
        "unet",
        "--out",
        str(tmp_path / "o.keras"),
    )
    assert rc == 1 and "\n" not in err and "nope.pth" in err


def test_wrong_layout_is_one_line_naming_the_key(tmp_path, capsys):
    ckpt = torchvision_checkpoint(tmp_path)  # an encoder, not an smp model
    rc, err = run_cli(
        capsys,
        "smp",
        "--checkpoint",
        str(ckpt),
        "--model",
        "unet",
        "--out",
        str(tmp_path / "o.keras"),
        "--encoder",
        "resnet18",
    )
    assert rc == 1 and "\n" not in err
    assert "'segmentation_head.0.weight'" in err
    assert not (tmp_path / "o.keras").exists()


def test_forgotten_encoder_says_to_name_it(tmp_path, capsys):
    ckpt = tmp_path / "segformer.safetensors"  # an smp Segformer with a MiT, cut short
    save_file(
        {
            "encoder.patch_embed1.proj.weight": np.zeros((32, 3, 7, 7), np.float32),
            "segmentation_head.0.weight": np.zeros((2, 256, 1, 1), np.float32),
        },
        str(ckpt),
    )
    out = str(tmp_path / "o.keras")
    rc, err = run_cli(
        capsys, "smp", "--checkpoint", str(ckpt), "--model", "segformer", "--out", out
    )
    assert rc == 1 and "\n" not in err
    assert "missing key 'encoder.conv1.weight'" in err and "encoder 'resnet34'" in err
    assert "--encoder" in err


def fake_smp_unet_state(encoder_width=64, decoder=(16, 8, 8, 4, 4), classes=3):
    """An smp Unet (resnet18 layout) state dict written by hand from smp's module names."""
    enc = random_torchvision_state("resnet18", width=encoder_width)
    state = {f"encoder.{k}": v for k, v in enc.items() if not k.startswith("fc.")}
    skips = [encoder_width * 4, encoder_width * 2, encoder_width, encoder_width, 0]
    cin = encoder_width * 8
    rng = np.random.default_rng(1)
    for i, (cout, skip) in enumerate(zip(decoder, skips)):
        for j, n_in in ((1, cin + skip), (2, cout)):
            pre = f"decoder.blocks.{i}.conv{j}"
            state[f"{pre}.0.weight"] = rng.normal(0, 0.1, (cout, n_in, 3, 3)).astype("float32")
            for p, v in (
                ("weight", 1.0),
                ("bias", 0.0),
                ("running_mean", 0.0),
                ("running_var", 1.0),
            ):
                state[f"{pre}.1.{p}"] = np.full(cout, v, np.float32)
        cin = cout
    state["segmentation_head.0.weight"] = rng.normal(0, 0.1, (classes, cin, 3, 3)).astype("float32")
    state["segmentation_head.0.bias"] = np.zeros(classes, np.float32)
    return state


def test_unet_of_the_wrong_encoder_names_the_key(tmp_path, capsys):
    ckpt = tmp_path / "unet.safetensors"
    save_file(fake_smp_unet_state(), str(ckpt))
    rc, err = run_cli(
        capsys,
        "smp",
        "--checkpoint",
        str(ckpt),
        "--model",
        "unet",
        "--out",
        str(tmp_path / "o.keras"),
        "--encoder",
        "resnet34",
    )
    assert rc == 1 and "\n" not in err
    assert "missing key 'encoder.layer1.2.conv1.weight'" in err  # resnet34 has 3 blocks there
    # resnet34's 80 extra variables (blocks layer1.2, layer2.2-3, layer3.2-5, layer4.2): one line
    assert "[79 more problems]" in err


def test_port_reads_classes_and_widths_and_never_overwrites(tmp_path, capsys):
    state = fake_smp_unet_state(classes=5)
    ckpt = tmp_path / "unet.safetensors"
    save_file(state, str(ckpt))
    out = tmp_path / "unet.keras"
    model = port(tmp_path, ckpt, "unet", "--encoder", "resnet18")
    assert model.output.shape[-1] == 5
    assert model.get_config()["decoder_channels"] == [16, 8, 8, 4, 4]
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("decoder_block2_conv1_conv").kernel),
        state["decoder.blocks.1.conv1.0.weight"].transpose(2, 3, 1, 0),
    )
    capsys.readouterr()
    before = out.stat().st_mtime_ns
    rc, err = run_cli(
        capsys,
        "smp",
        "--checkpoint",
        str(ckpt),
        "--model",
        "unet",
        "--out",
        str(out),
        "--encoder",
        "resnet18",
    )
    assert rc == 1 and "--overwrite" in err and out.stat().st_mtime_ns == before
    rc, err = run_cli(
        capsys,
        "smp",
        "--checkpoint",
        str(ckpt),
        "--model",
        "unet",
        "--out",
        str(tmp_path / "other.keras"),
        "--encoder",
        "resnet18",
        "--num-classes",
        "2",
    )
    assert rc == 1 and "5 classes" in err
    assert (
        main(
            [
                "smp",
                "--checkpoint",
                str(ckpt),
                "--model",
                "unet",
                "--out",
                str(out),
                "--encoder",
                "resnet18",
                "--overwrite",
            ]
        )
        == 0
    )


def test_module_entry_point(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo.port",
            "smp",
            "--checkpoint",
            str(tmp_path / "x.pth"),
            "--model",
            "unet",
            "--out",
            str(tmp_path / "x.keras"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: No checkpoint file at")


def test_smp_options_are_checked_per_architecture(tmp_path, capsys):
    ckpt = torchvision_checkpoint(tmp_path)
    out = str(tmp_path / "o.keras")
    base = ["smp", "--checkpoint", str(ckpt), "--out", out, "--encoder", "resnet18"]
    # An option the architecture's weights tell (or that it lacks) is refused, naming those
    # it takes.
    rc, err = run_cli(capsys, *base, "--model", "pan", "--smp-arg", "decoder_channels=16")
    assert rc == 1 and "\n" not in err
    assert "'decoder_channels'" in err and "decoder_interpolation, encoder_output_stride" in err
    rc, err = run_cli(capsys, *base, "--model", "unet", "--smp-arg", "encoder_output_stride=8")
    assert rc == 1 and "options its weights do not tell are none" in err
    rc, err = run_cli(capsys, *base, "--model", "deeplabv3", "--smp-arg", "encoder_output_stride")
    assert rc == 1 and "NAME=VALUE" in err and "\n" not in err
    assert not (tmp_path / "o.keras").exists()


def test_smp_options_parse_as_literals():
    from zoo.port.smp import parse_options

    got = parse_options(["encoder_output_stride=8", "decoder_atrous_rates=(6, 12, 18)", "a=b c"])
    assert got == {"encoder_output_stride": 8, "decoder_atrous_rates": [6, 12, 18], "a": "b c"}
