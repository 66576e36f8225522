"""Pretrained encoders on other than 3 input channels: the first conv's kernel is adapted."""

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file
from test_pretrained import random_torchvision_state

import zoo
from zoo import pretrained
from zoo.layers import FoldedOffset

TINY = {
    "encoder": "resnet18",
    "encoder_kwargs": {"base_width": 8},
    "decoder_channels": (16, 16, 8, 8, 8),
}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet18_w8.safetensors"
    state = random_torchvision_state("resnet18", width=8)
    save_file(state, str(path))
    return path, state


def unet(channels, weights, num_classes=2):
    return zoo.create_model(
        "unet",
        num_classes=num_classes,
        input_shape=(None, None, channels),
        encoder_weights=str(weights),
        **TINY,
    )


@pytest.mark.parametrize("channels", [1, 3, 4, 13])
def test_pretrained_encoder_loads_for_any_channel_count(weights_file, channels):
    path, state = weights_file
    model = unet(channels, path)
    kernel = np.asarray(model.get_layer("encoder_stem_conv").kernel)
    assert kernel.shape == (7, 7, channels, 8)
    rgb = state["conv1.weight"].transpose(2, 3, 1, 0)  # (7, 7, 3, 8)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    if channels == 1:  # summed over RGB, the normalization's 1 / std folded in
        np.testing.assert_allclose(kernel[:, :, 0], (rgb / std[:, None]).sum(2), rtol=1e-5)
        offset = np.asarray(model.get_layer("encoder_stem_conv_offset").kernel)
        want = -(rgb * (mean / std)[:, None]).sum(2)
        np.testing.assert_allclose(offset[:, :, 0], want, rtol=1e-5, atol=1e-6)
    elif channels == 3:
        np.testing.assert_array_equal(kernel, rgb)
    else:  # channel i repeats RGB channel i % 3, every output channel scaled alike
        ratio = kernel / rgb[:, :, np.arange(channels) % 3]
        np.testing.assert_allclose(
            ratio, ratio[:1, :1, :1, :].repeat(7, 0).repeat(7, 1).repeat(channels, 2), rtol=1e-5
        )
        assert np.all(ratio < 1)
    out = model(np.random.default_rng(0).random((1, 64, 64, channels), dtype=np.float32))
    assert out.shape == (1, 64, 64, 2) and np.all(np.isfinite(out))


def test_gray_model_equals_rgb_model_on_the_gray_image_repeated(weights_file):
    path, _ = weights_file
    rgb = unet(3, path)
    gray = unet(1, path)
    # Same decoder: copy every layer the two models share except the adapted first conv.
    for layer in gray.layers:
        if layer.weights and layer.name not in ("encoder_stem_conv", "encoder_stem_conv_offset"):
            layer.set_weights(rgb.get_layer(layer.name).get_weights())
    image = np.random.default_rng(1).random((2, 64, 96, 1), dtype=np.float32)
    want = np.asarray(rgb(np.repeat(image, 3, axis=-1), training=False))
    got = np.asarray(gray(image, training=False))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.abs(want).max() > 0.1  # not trivially zero


@pytest.mark.parametrize("channels", [2, 4, 13])
def test_adapted_first_conv_keeps_the_activation_scale(weights_file, channels):
    path, _ = weights_file
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def stem(model):
        return keras.Model(model.input, model.get_layer("encoder_stem_conv").output)

    rgb, adapted = stem(unet(3, path)), stem(unet(channels, path))
    rng = np.random.default_rng(2)
    for name, draw in {
        # Independent channels with the statistics the normalization expects.
        "normalized": lambda c: (
            mean[np.arange(c) % 3] + std[np.arange(c) % 3] * rng.normal(size=(4, 64, 64, c))
        ),
        # Plain random images in [0, 1].
        "uniform": lambda c: rng.random((4, 64, 64, c)),
    }.items():
        want = np.asarray(rgb(draw(3).astype("float32"))).std()
        got = np.asarray(adapted(draw(channels).astype("float32"))).std()
        assert 0.9 < got / want < 1.1, (name, got / want)


def test_adapt_input_kernel_by_hand():
    # Two output channels, 1x1 kernels, OIHW.
    w = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]).reshape(2, 3, 1, 1)
    norm = pretrained.Normalization(mean=(0.5, 0.25, 0.0), std=(0.5, 1.0, 2.0))
    k1, off = pretrained.adapt_input_kernel(w, 1, norm)
    np.testing.assert_allclose(k1.ravel(), [1 / 0.5 + 2 + 3 / 2, 0 - 1 + 0.5])
    np.testing.assert_allclose(off.ravel(), [-(1 * 0.5 / 0.5 + 2 * 0.25), -(0 + -1 * 0.25)])
    k6, none = pretrained.adapt_input_kernel(w, 6, norm)
    assert none is None and k6.shape == (2, 6, 1, 1)
    scale = np.sqrt(np.array([14.0, 2.0]) / np.array([28.0, 4.0]))  # every RGB kernel twice
    np.testing.assert_allclose(k6[:, :, 0, 0], np.tile(w[:, :, 0, 0], 2) * scale[:, None])
    k3, _ = pretrained.adapt_input_kernel(w, 3, norm)
    np.testing.assert_array_equal(k3, w)


def test_folded_offset_is_the_padded_support_convolved():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 1, 2)).astype("float32")
    layer = FoldedOffset(3, strides=2, padding=1)
    features = np.zeros((2, 3, 4, 2), np.float32)
    image = np.zeros((2, 5, 7, 1), np.float32)
    layer.build([features.shape, image.shape])
    layer.kernel.assign(kernel)
    got = np.asarray(layer([features, image]))
    support = np.pad(np.ones((5, 7)), 1)
    want = np.zeros((3, 4, 2))
    for i in range(3):
        for j in range(4):
            patch = support[2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            want[i, j] = np.einsum("hw,hwo->o", patch, kernel[:, :, 0])
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want, rtol=1e-5, atol=1e-6)
    assert not layer.trainable_weights
    clone = FoldedOffset.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory):
    app = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(None, None, 3), alpha=0.35
    )
    rng = np.random.default_rng(0)
    for v in app.weights:
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, v.shape))
        else:
            v.assign(rng.normal(0, 0.1, v.shape))
    path = tmp_path_factory.mktemp("app") / "mobilenet_v2_0.35_notop.weights.h5"
    app.save_weights(path)
    return path, np.asarray(app.get_layer("Conv1").kernel)


def adapter_unet(channels, path):
    return zoo.create_model(
        "unet",
        input_shape=(None, None, channels),
        encoder="keras_mobilenetv2",
        encoder_kwargs={"alpha": 0.35},
        encoder_weights=str(path),
        decoder_channels=(16, 16, 8, 8, 8),
    )


def test_keras_application_on_gray_equals_rgb_on_the_gray_image_repeated(mobilenet_file):
    path, _ = mobilenet_file
    rgb, gray = adapter_unet(3, path), adapter_unet(1, path)
    gray.set_weights(rgb.get_weights())  # the application stays RGB: same variables
    image = np.random.default_rng(1).random((1, 64, 64, 1), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(gray(image, training=False)),
        np.asarray(rgb(np.repeat(image, 3, -1), training=False)),
        atol=1e-5,
    )


def test_keras_application_first_conv_adapted_to_four_channels(mobilenet_file):
    path, rgb_kernel = mobilenet_file
    model = adapter_unet(4, path)
    inner = model.get_layer("encoder_keras_mobilenetv2")
    kernel = np.asarray(inner.get_layer("Conv1").kernel)
    assert kernel.shape == rgb_kernel.shape[:2] + (4, rgb_kernel.shape[3])
    ratio = kernel / rgb_kernel[:, :, [0, 1, 2, 0]]
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:1, :1, :1], ratio.shape), rtol=1e-5)
    # [-1, 1] preprocessing for every channel, and the rest of the network as in the file.
    assert model.get_layer("encoder_preprocess").scale == 2.0
    rgb = adapter_unet(3, path).get_layer("encoder_keras_mobilenetv2")
    np.testing.assert_array_equal(
        np.asarray(inner.get_layer("block_16_project").kernel),
        np.asarray(rgb.get_layer("block_16_project").kernel),
    )
