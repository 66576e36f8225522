"""keras-hub backbones as encoders (skipped only when keras-hub is not installed)."""

import sys

import keras
import numpy as np
import pytest
from helpers import fixed_batch, train_steps

import zoo

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny ResNet backbone with random weights and an ImageNet image converter, saved as a
    local preset directory."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        image_shape=(None, None, 3),
    )
    rng = np.random.default_rng(0)
    for v in backbone.weights:  # batch-norm statistics too, so loading them is visible
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape))
        elif "moving_mean" in v.path:
            v.assign(rng.normal(0, 0.1, v.shape))
    path = tmp_path_factory.mktemp("hub") / "tiny_resnet"
    backbone.save_to_preset(str(path))
    keras_hub.layers.ResNetImageConverter(
        scale=list(1 / (255 * STD)), offset=list(-MEAN / STD)
    ).save_to_preset(str(path))
    return path, backbone


def assert_backbone_weights(model, backbone):
    inner = model.get_layer("encoder_keras_hub")
    ours = {v.path: np.asarray(v) for v in inner.weights}
    for v in backbone.weights:
        np.testing.assert_array_equal(ours[v.path], np.asarray(v), err_msg=v.path)


@pytest.mark.parametrize("name", ["unet", "fpn"])
def test_preset_directory_loads_and_trains_a_step(preset, name):
    path, backbone = preset
    model = zoo.create_model(name, num_classes=2, encoder="keras_hub", encoder_weights=str(path))
    assert_backbone_weights(model, backbone)
    # The preset's converter (for [0, 255] pixels) is inside, rescaled for [0, 1] images.
    pre = model.get_layer("encoder_preprocess")
    np.testing.assert_allclose(pre.scale, 1 / STD, rtol=1e-6)
    np.testing.assert_allclose(pre.offset, -MEAN / STD, rtol=1e-6)
    images, masks = fixed_batch(2, 64, 64, num_classes=2)
    before = [np.asarray(v).copy() for v in model.trainable_variables]
    losses, _ = train_steps(model, images, masks, steps=1)
    assert np.isfinite(losses[0])
    changed = [
        not np.array_equal(b, np.asarray(v)) for b, v in zip(before, model.trainable_variables)
    ]
    assert all(changed)


def test_saved_model_never_reads_the_preset_again(preset, tmp_path, monkeypatch):
    import shutil

    import keras_hub

    path, _ = preset
    copy = tmp_path / "preset_copy"
    shutil.copytree(path, copy)
    model = zoo.create_model("unet", encoder="keras_hub", encoder_weights=str(copy))
    config = model.get_config()["encoder_kwargs"]
    assert config["backbone"]["class_name"] == "ResNetBackbone" and "preprocessing" in config
    model.save(tmp_path / "m.keras")
    shutil.rmtree(copy)

    def no_preset(*args, **kwargs):
        raise AssertionError("loading a saved model read a keras-hub preset")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", no_preset)
    monkeypatch.setattr(keras_hub.layers.ImageConverter, "from_preset", no_preset)
    loaded = zoo.saving.load_model(tmp_path / "m.keras")
    images = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(
        np.asarray(model(images, training=False)), np.asarray(loaded(images, training=False))
    )


def test_preset_as_architecture_only_gives_random_weights(preset):
    path, backbone = preset
    model = zoo.create_model("unet", encoder="keras_hub", encoder_kwargs={"preset": str(path)})
    inner = model.get_layer("encoder_keras_hub")
    conv = [v for v in inner.weights if v.path == "conv1_conv/kernel"][0]
    want = [v for v in backbone.weights if v.path == "conv1_conv/kernel"][0]
    assert conv.shape == want.shape and not np.array_equal(np.asarray(conv), np.asarray(want))


def test_gray_and_four_channel_inputs(preset):
    path, backbone = preset
    rgb = zoo.create_model("unet", encoder="keras_hub", encoder_weights=str(path))
    gray = zoo.create_model(
        "unet", input_shape=(None, None, 1), encoder="keras_hub", encoder_weights=str(path)
    )
    gray.set_weights(rgb.get_weights())  # same decoder; the backbone is RGB in both
    image = np.random.default_rng(1).random((1, 64, 64, 1), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(gray(image, training=False)),
        np.asarray(rgb(np.repeat(image, 3, -1), training=False)),
        atol=1e-5,
    )
    four = zoo.create_model(
        "unet", input_shape=(None, None, 4), encoder="keras_hub", encoder_weights=str(path)
    )
    inner = four.get_layer("encoder_keras_hub")
    kernel = np.asarray([v for v in inner.weights if v.path == "conv1_conv/kernel"][0])
    rgb_kernel = np.asarray([v for v in backbone.weights if v.path == "conv1_conv/kernel"][0])
    assert kernel.shape == rgb_kernel.shape[:2] + (4,) + rgb_kernel.shape[3:]
    ratio = kernel[:, :, 3] / rgb_kernel[:, :, 0]  # channel 3 repeats R, rescaled
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0, 0], ratio.shape), rtol=1e-5)
    np.testing.assert_allclose(four.get_layer("encoder_preprocess").scale[3], 1 / STD[0])


def test_missing_preset_is_one_line(tmp_path):
    pytest.importorskip("keras_hub")
    with pytest.raises(ValueError) as err:
        zoo.create_model("unet", encoder="keras_hub", encoder_weights=str(tmp_path / "none"))
    assert "\n" not in str(err.value) and "could not load keras-hub preset" in str(err.value)
    with pytest.raises(ValueError, match=r"needs a preset"):
        zoo.create_model("unet", encoder="keras_hub")


def test_without_keras_hub_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub -> ImportError
    with pytest.raises(
        ValueError, match=r'needs the keras-hub package: pip install -e "\.\[hub\]"'
    ):
        zoo.create_model("unet", encoder="keras_hub", encoder_weights="resnet_50_imagenet")
