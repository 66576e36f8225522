"""Pretrained encoder weights: torchvision parity, the imagenet cache, offline errors, local
files, saved models that never re-read their source, and old files that compute as before."""

import time
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import build_tiny
from safetensors.numpy import save_file
from test_port import BLOCKS, torchvision_resnet_shapes
from torch_ref import reference_python, requires_reference, run_reference

import zoo
import zoo.download
import zoo.port.state_dict
import zoo.saving
from zoo import pretrained

DATA = Path(__file__).resolve().parent / "data"


def random_torchvision_state(encoder, width=64, seed=0):
    """A torchvision-layout state dict with plausible values (unit-scale batch norms)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in torchvision_resnet_shapes(BLOCKS[encoder], width).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(0, np.int64)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            state[key] = rng.uniform(0.5, 1.5, shape).astype("float32")
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype("float32")
        else:
            state[key] = rng.normal(0, 0.1, shape).astype("float32")
    return state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty weights cache of our own."""
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEGZOO_OFFLINE", raising=False)
    return tmp_path / "home" / "weights"


# === Parity with torchvision (reference interpreter) ===


@pytest.mark.slow  # two full ResNet-34s, ~30 s each on 2 cores
@requires_reference("torch", "torchvision", "safetensors")
@pytest.mark.parametrize(
    "size, suffix", [((64, 96), ".safetensors"), ((75, 101), ".pth")], ids=["even", "odd"]
)
def test_resnet34_features_equal_torchvision(tmp_path, monkeypatch, size, suffix):
    monkeypatch.setenv("SEGZOO_TORCH_PYTHON", reference_python())
    images = np.random.default_rng(0).random((2, *size, 3), dtype=np.float32)
    path = tmp_path / f"resnet34{suffix}"
    theirs = run_reference(
        "torchvision_resnet", {"images": images}, arch="resnet34", path=str(path)
    )
    encoder = zoo.create_encoder("resnet34", input_shape=(None, None, 3), weights=str(path))
    ours = encoder(images, training=False)
    for stride in (2, 4, 8, 16, 32):
        want = theirs[f"s{stride}"]
        got = np.asarray(ours[stride])
        assert got.shape == want.shape, stride
        scale = float(np.abs(want).max())
        assert scale < 50  # unit-scale features: the tolerance means something
        # float32 through 34 layers, relative to the features' size: oneDNN and torch sum in
        # different orders (CI saw 1.4e-5 of 24 at stride 32); a wrong weight is off by O(1).
        diff = float(np.abs(got - want).max())
        print(f"stride {stride}: max |diff| {diff:.2e}, max |feature| {scale:.2f}")
        assert diff < 3e-5 * max(1.0, scale), f"stride {stride}: max abs diff {diff}"


# === imagenet: the cache, offline errors ===


def test_offline_imagenet_fails_fast_with_one_line(cache):
    start = time.monotonic()
    with pytest.raises(OSError) as err:
        zoo.create_model("unet", encoder="resnet18", encoder_weights="imagenet")
    elapsed = time.monotonic() - start
    msg = str(err.value)
    assert "\n" not in msg
    assert "https://huggingface.co/timm/resnet18.tv_in1k/resolve/main/model.safetensors" in msg
    assert str(cache / "timm" / "resnet18.tv_in1k" / "model.safetensors") in msg
    assert elapsed < 30, elapsed
    assert not list(cache.rglob("*.part-*"))  # no half-written file left behind


def test_offline_switch_fails_without_trying(cache, monkeypatch):
    monkeypatch.setenv("SEGZOO_OFFLINE", "1")
    with pytest.raises(
        OSError, match=r"downloads are off \(SEGZOO_OFFLINE .*: download https://\S+ and save"
    ):
        zoo.create_encoder("resnet34", input_shape=(64, 64, 3), weights="imagenet")


def test_cache_folder_follows_keras_home(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGZOO_HOME", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert pretrained.cache_dir() == tmp_path / "kh" / "segzoo" / "weights"
    monkeypatch.setenv("SEGZOO_HOME", str(tmp_path / "sz"))
    assert pretrained.cache_dir() == tmp_path / "sz" / "weights"


def test_imagenet_from_the_cache_lands_in_the_encoder(cache):
    state = random_torchvision_state("resnet18")
    path = cache / "timm" / "resnet18.tv_in1k" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    model = zoo.create_model("unet", encoder="resnet18", encoder_weights="imagenet")
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_stage4_block2_conv2_conv").kernel),
        state["layer4.1.conv2.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_stem_bn").moving_variance), state["bn1.running_var"]
    )
    # The weights' ImageNet normalization is inside the model: it takes [0, 1] images.
    pre = model.get_layer("encoder_preprocess")
    np.testing.assert_allclose(pre.scale, 1 / np.array([0.229, 0.224, 0.225]), rtol=1e-6)
    np.testing.assert_allclose(
        pre.offset, -np.array([0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-6
    )


def test_wrong_file_in_the_cache_is_one_error_naming_the_key(cache):
    state = random_torchvision_state("resnet18")
    del state["layer2.0.downsample.1.running_mean"]
    path = cache / "timm" / "resnet18.tv_in1k" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"missing key 'layer2\.0\.downsample\.1\.running_mean'"):
        zoo.create_encoder("resnet18", input_shape=(64, 64, 3), weights="imagenet")


# === Local files, bad values ===


def test_smp_encoder_checkpoint_is_read_from_its_encoder_prefix(tmp_path):
    state = random_torchvision_state("resnet18", width=8)
    smp_like = {f"encoder.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    smp_like["decoder.blocks.0.conv1.0.weight"] = np.zeros((4, 4, 3, 3), np.float32)
    path = tmp_path / "smp.safetensors"
    save_file(smp_like, str(path))
    model = zoo.create_encoder("resnet18", input_shape=(32, 32, 3), base_width=8, weights=str(path))
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("encoder_stage3_block1_downsample_bn").gamma),
        state["layer3.0.downsample.1.weight"],
    )


def test_bad_encoder_weights_values_are_one_line():
    with pytest.raises(ValueError) as err:
        zoo.create_model("deeplab_lite", encoder_weights="imagenet")
    msg = str(err.value)
    assert "\n" not in msg
    assert "encoder 'mobilenet_lite' has no published pretrained weights" in msg
    assert "resnet34" in msg  # the encoders that have some
    with pytest.raises(ValueError, match=r"takes None, 'imagenet' or the path .*no such file"):
        zoo.create_model("unet", encoder_weights="/no/such/file.safetensors")
    with pytest.raises(ValueError, match=r"disagrees with encoder_kwargs\['weights'\]"):
        zoo.create_model(
            "unet",
            encoder="keras_mobilenetv2",
            encoder_kwargs={"weights": "imagenet", "alpha": 0.35},
            encoder_weights="/x.weights.h5",
        )


def test_keras_application_adapter_loads_a_local_weights_file(tmp_path):
    app = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(None, None, 3), alpha=0.35
    )
    rng = np.random.default_rng(0)
    for v in app.weights:
        v.assign(rng.normal(0, 0.05, v.shape))
    path = tmp_path / "mobilenet_v2_notop.weights.h5"
    app.save_weights(path)
    model = zoo.create_model(
        "unet",
        encoder="keras_mobilenetv2",
        encoder_kwargs={"alpha": 0.35},
        encoder_weights=str(path),
    )
    inner = model.get_layer("encoder_keras_mobilenetv2")
    for name in ("Conv1", "block_16_project", "Conv_1_bn"):
        for got, want in zip(inner.get_layer(name).weights, app.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# === Saved models load from their own file only ===


def test_saved_model_never_rereads_its_weights_file(tmp_path, monkeypatch):
    state = random_torchvision_state("resnet18", width=8)
    path = tmp_path / "r18.safetensors"
    save_file(state, str(path))
    model = build_tiny("unet", encoder_weights=str(path))
    images = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    path.unlink()  # the source is gone

    def no_reading(*args, **kwargs):
        raise AssertionError("loading a saved model read a weights source")

    monkeypatch.setattr(zoo.port.state_dict, "load_state_dict", no_reading)
    monkeypatch.setattr(zoo.download, "fetch", no_reading)
    monkeypatch.setattr(pretrained, "fetch", no_reading)
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(
        np.asarray(model(images, training=False)), np.asarray(loaded(images, training=False))
    )
    assert loaded.get_config()["encoder_weights"] == str(path)  # provenance kept


def test_saved_imagenet_model_loads_without_cache_or_network(cache, tmp_path, monkeypatch):
    path = cache / "timm" / "resnet18.tv_in1k" / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(random_torchvision_state("resnet18"), str(path))
    model = zoo.create_model("fpn", encoder="resnet18", encoder_weights="imagenet")
    model.save(tmp_path / "fpn.keras")
    path.unlink()
    monkeypatch.setenv("SEGZOO_OFFLINE", "1")  # any fetch would now raise
    loaded = keras.saving.load_model(tmp_path / "fpn.keras", safe_mode=True)
    images = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(model(images, training=False)),
        np.asarray(loaded(images, training=False)),
        atol=0,
    )


# === Files saved before pretrained weights existed ===


def test_model_saved_before_this_change_computes_what_it_computed():
    # Written by the code of commit 2fb694a (before pretrained weights): a U-Net whose config
    # has encoder_weights=None. Its graph (no normalization, TensorFlow padding) must stay.
    # The stored logits came from oneDNN's kernels; TensorFlow without oneDNN (CPUs without
    # AVX-512) rounds differently, by up to 2e-7 here, while a changed graph moves them by
    # orders of magnitude more.
    model = zoo.saving.load_model(DATA / "unet_resnet18_before_pretrained.keras")
    with np.load(DATA / "unet_resnet18_before_pretrained.npz") as data:
        np.testing.assert_allclose(
            np.asarray(model(data["images"], training=False)),
            data["logits"],
            rtol=1e-5,
            atol=1e-6,
        )
    names = {layer.name for layer in model.layers}
    assert "encoder_preprocess" not in names and "encoder_stem_pad" not in names


def test_config_without_encoder_weights_builds_the_old_graph():
    model = build_tiny("unet")
    config = model.get_config()
    del config["encoder_weights"]  # files saved before the argument existed
    rebuilt = type(model).from_config(config)
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    assert not any(
        isinstance(layer, (keras.layers.ZeroPadding2D, zoo.layers.ChannelAffine))
        for layer in rebuilt.layers
    )


def test_input_normalization_none_leaves_normalizing_to_the_caller(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file(random_torchvision_state("resnet18", width=8), str(path))
    inside = build_tiny("unet", encoder_weights=str(path))
    outside = build_tiny(
        "unet",
        encoder_weights=str(path),
        encoder_kwargs={"base_width": 8, "input_normalization": None},
    )
    assert "encoder_preprocess" not in {layer.name for layer in outside.layers}
    outside.set_weights(inside.get_weights())
    images = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    normalized = (images - [0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225])
    # numpy normalizes in float64, the layer in float32: logits of magnitude ~6 differ by a few
    # ulps (1.1e-5 seen), so the bound scales with the logit; a missing or doubled
    # normalization moves the logits by O(1).
    np.testing.assert_allclose(
        np.asarray(outside(normalized.astype("float32"), training=False)),
        np.asarray(inside(images, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match=r"\('weights', 'imagenet', None\).*'caffe'"):
        build_tiny("unet", encoder_kwargs={"base_width": 8, "input_normalization": "caffe"})


@pytest.fixture
def weights_server():
    """A loopback HTTP server like the Hugging Face hub: /file redirects to /blob with the
    file's SHA-256 in X-Linked-Etag (`published` decides which hash it sends)."""
    import hashlib
    import http.server
    import threading

    state = {"body": b"", "published": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (http.server's name)
            if self.path == "/file":
                self.send_response(302)
                self.send_header("Location", "/blob")
                digest = state["published"] or hashlib.sha256(state["body"]).hexdigest()
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(state["body"])))
                self.end_headers()
                self.wfile.write(state["body"])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/file", state
    server.shutdown()
    server.server_close()


def test_download_checks_the_published_hash_and_lands_in_the_cache(cache, weights_server, tmp_path):
    url, served = weights_server
    local = tmp_path / "w.safetensors"
    state = random_torchvision_state("resnet18", width=8)
    save_file(state, str(local))
    served["body"] = local.read_bytes()
    source = pretrained.WeightsSource(url, "test/w.safetensors", "test weights", "none")
    path = pretrained.fetch(source, "test weights")
    assert path == cache / "test" / "w.safetensors" and path.read_bytes() == served["body"]
    # A transfer whose bytes do not match the published hash is refused, nothing is cached.
    path.unlink()
    served["published"] = "0" * 64
    with pytest.raises(OSError, match=r"SHA-256 [0-9a-f]{64}, but 0{64} is published"):
        pretrained.fetch(source, "test weights")
    assert not list(cache.rglob("*w.safetensors*"))
