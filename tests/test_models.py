"""Smoke tests of every registered model (driven by the registry) and of the encoders.

Every check runs on each model's `tiny_config`; nothing here branches on model names, so a
new model file is tested without editing this module.
"""

import inspect
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from helpers import (
    AUTO_NAMES,
    all_layers,
    assert_save_load_identical,
    build_tiny,
    count_trainable,
    eval_loss,
    fixed_batch,
    train_steps,
)

import zoo
from zoo.build_context import shapes_only

ROOT = Path(__file__).resolve().parents[1]
MODELS = zoo.list_models()
# Native encoders plus applications adapters, one of them without a stride-2 level.
UNET_ENCODERS = ["resnet34", "mobilenet_lite", "keras_mobilenetv2", "keras_convnext_tiny"]


@pytest.fixture(scope="module", params=MODELS)
def tiny(request):
    """(name, tiny model with 2 classes and unknown spatial size)."""
    return request.param, build_tiny(request.param)


def test_models_registered():
    assert {"unet", "fpn", "deeplab_lite"} <= set(MODELS)


def test_output_shape_for_several_sizes(tiny):
    name, model = tiny
    d = zoo.model_info(name).divisor
    assert model.divisor == d
    for h, w in [(2 * d, 2 * d), (d, 3 * d), (3 * d, 2 * d)]:
        out = model(np.zeros((2, h, w, 3), np.float32))
        assert tuple(out.shape) == (2, h, w, 2)
        assert out.dtype == "float32"


def test_static_input_shape_and_io_names(tiny):
    name, _ = tiny
    d = zoo.model_info(name).divisor
    model = build_tiny(name, num_classes=3, input_shape=(2 * d, 3 * d, 3))
    assert len(model.inputs) == 1 and len(model.outputs) == 1
    assert isinstance(model.get_layer("image"), keras.layers.InputLayer)
    assert tuple(model.output.shape) == (None, 2 * d, 3 * d, 3)


def test_training_lowers_loss_and_every_weight_gets_a_gradient(tiny):
    name, _ = tiny
    keras.utils.set_random_seed(0)  # initial weights and dropout masks: reproducible
    model = build_tiny(name)  # fresh weights: other tests share the fixture
    images, masks = fixed_batch(2, 64, 64, num_classes=2)
    before = eval_loss(model, images, masks)
    losses, grads = train_steps(model, images, masks, steps=4)
    assert losses[-1] < losses[0]
    assert all(np.isfinite(losses))
    zero = [v.path for v, g in zip(model.trainable_variables, grads) if not np.any(np.asarray(g))]
    assert not zero, f"no gradient for {zero}"
    # The training steps changed the inference output too.
    assert eval_loss(model, images, masks) != before


def test_config_round_trip(tiny):
    name, model = tiny
    config = model.get_config()
    params = set(inspect.signature(type(model).__init__).parameters) - {"self", "kwargs"}
    assert set(config) == params | {"name", "trainable"}
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert count_trainable(clone) == count_trainable(model)


def test_metadata_is_saved_and_restored(tiny, tmp_path):
    name, model = tiny
    clone = type(model).from_config(model.get_config())
    assert clone.metadata == {} and zoo.models.base.model_mode(clone) == "multiclass"
    clone.metadata = {"mode": "multilabel", "image_size": (64, 64), "class_names": ["a", "b"]}
    clone.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.metadata == {
        "mode": "multilabel",
        "image_size": [64, 64],
        "class_names": ["a", "b"],
    }
    assert zoo.models.base.model_mode(loaded) == "multilabel"


def test_keras_save_load_identical(tiny, tmp_path):
    name, model = tiny
    d = zoo.model_info(name).divisor
    images, _ = fixed_batch(2, 2 * d, d, num_classes=2, seed=1)
    assert_save_load_identical(model, images, tmp_path / f"{name}.keras")


def test_no_lambda_layers_and_stable_names(tiny):
    _, model = tiny
    layers = all_layers(model)
    assert not [la.name for la in layers if isinstance(la, keras.layers.Lambda)]
    auto = re.compile(rf"^({'|'.join(AUTO_NAMES)})(_\d+)?$")
    assert not [la.name for la in layers if auto.match(la.name)]


def test_every_batch_norm_is_synchronized_with_torch_defaults(tiny):
    _, model = tiny
    bns = [la for la in all_layers(model) if isinstance(la, keras.layers.BatchNormalization)]
    assert bns
    assert all(bn.synchronized and bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in bns)


def test_indivisible_static_size_raises(tiny):
    name, _ = tiny
    d = zoo.model_info(name).divisor
    with pytest.raises(ValueError, match=rf"height {d + 2} is not a multiple of {d}"):
        build_tiny(name, input_shape=(d + 2, d, 3))


def test_indivisible_dynamic_size_raises_at_run_time(tiny):
    name, model = tiny
    d = zoo.model_info(name).divisor
    with pytest.raises(Exception, match=f"multiples of {d}"):
        model(np.zeros((1, 2 * d, d + 2, 3), np.float32))


@pytest.mark.parametrize("static", [True, False])
def test_pad_to_divisor_equals_manual_padding(tiny, static):
    name, model = tiny
    d = zoo.model_info(name).divisor
    h, w = 2 * d - 6, d + 3
    shape = (h, w, 3) if static else (None, None, 3)
    padded = build_tiny(name, input_shape=shape, pad_to_divisor=True)
    padded.set_weights(model.get_weights())
    images, _ = fixed_batch(1, h, w, num_classes=2, seed=2)
    out = np.asarray(padded(images))
    assert out.shape == (1, h, w, 2)
    # Independent computation: zero-pad by hand, run the unpadded model, crop.
    manual = np.pad(images, [(0, 0), (0, 2 * d - h), (0, 2 * d - w), (0, 0)])
    expected = np.asarray(model(manual))[:, :h, :w]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_num_classes_raises(tiny, bad):
    name, _ = tiny
    with pytest.raises(ValueError, match=r"num_classes=" + re.escape(repr(bad))):
        build_tiny(name, num_classes=bad)


def test_bad_common_arguments_raise(tiny):
    name, _ = tiny
    with pytest.raises(ValueError, match=r"activation='relu'"):
        build_tiny(name, activation="relu")
    with pytest.raises(ValueError, match=r"input_shape=\(64, 64\)"):
        build_tiny(name, input_shape=(64, 64))
    with pytest.raises(ValueError, match="Did you mean 'resnet34' or 'resnet50'"):
        build_tiny(name, encoder="resnet35", encoder_kwargs={})


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_activation_option(tiny, activation):
    name, model = tiny
    with_act = build_tiny(name, activation=activation)
    with_act.set_weights(model.get_weights())
    images, _ = fixed_batch(1, 64, 64, num_classes=2)
    logits = np.asarray(model(images)).astype(np.float64)
    if activation == "sigmoid":
        expected = 1 / (1 + np.exp(-logits))
    else:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        expected = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(with_act(images)), expected, rtol=1e-5, atol=1e-6)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"Unknown model 'unte'\. Did you mean 'unet'\?"):
        zoo.create_model("unte")


def test_mixed_precision_output_is_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_tiny(MODELS[0])
        assert model(np.zeros((1, 64, 64, 3), np.float32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", MODELS)
def test_yaml_config_matches_constructor(name):
    cls = zoo.model_info(name).obj
    config = yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())
    params = {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k not in ("self", "num_classes", "input_shape") and p.kind is not p.VAR_KEYWORD
    }
    assert config.pop("name") == name
    assert set(config) == set(params)
    for key, default in params.items():
        expected = list(default) if isinstance(default, tuple) else default
        assert config[key] == expected, key


def test_no_lambda_in_package_source():
    pattern = re.compile(r"\bLambda\s*\(|layers\.Lambda\b")
    offenders = [
        str(p.relative_to(ROOT))
        for package in ("zoo", "losses")
        for p in (ROOT / package).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert not offenders


# --- Encoders -------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", UNET_ENCODERS)
def test_unet_with_encoder(encoder):
    kwargs = zoo.encoder_info(encoder).tiny_config
    model = build_tiny("unet", input_shape=(64, 96, 3), encoder=encoder, encoder_kwargs=kwargs)
    out = model(np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32))
    assert tuple(out.shape) == (1, 64, 96, 2)
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("encoder", zoo.list_encoders())
def test_encoder_features_match_declared_strides(encoder):
    info = zoo.encoder_info(encoder)
    if "requires" in info.metadata:  # an optional extra (keras_hub: the "hub" extra)
        pytest.importorskip(info.metadata["requires"])
    model = zoo.create_encoder(encoder, input_shape=(64, 96, 3), **info.tiny_config)
    features = model(np.zeros((1, 64, 96, 3), np.float32))
    assert tuple(sorted(features)) == info.strides
    for stride, fmap in features.items():
        assert tuple(fmap.shape[:3]) == (1, 64 // stride, 96 // stride)


@pytest.mark.parametrize("encoder", ["resnet18", "mobilenet_lite"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_encoder_output_stride_by_dilation(encoder, output_stride):
    info = zoo.encoder_info(encoder)
    assert output_stride in info.output_strides
    model = zoo.create_encoder(
        encoder, input_shape=(64, 64, 3), output_stride=output_stride, **info.tiny_config
    )
    dense = zoo.create_encoder(encoder, input_shape=(64, 64, 3), **info.tiny_config)
    assert max(model.output) == output_stride
    size = 64 // output_stride
    channels = dense.output[32].shape[-1]
    assert tuple(model.output[output_stride].shape) == (None, size, size, channels)
    # Dilation changes no weight shapes: the same parameters at every output stride.
    assert model.count_params() == dense.count_params()


def test_encoder_rejects_bad_output_stride():
    with pytest.raises(ValueError, match=r"output_stride=4"):
        zoo.create_encoder("resnet18", input_shape=(64, 64, 3), output_stride=4)


def test_vgg_encoders_match_torchvision_param_count():
    # torchvision vgg*_bn().features (conv weights and biases, BN scales and offsets).
    expected = {
        "vgg11_bn": 9_225_984,
        "vgg13_bn": 9_410_880,
        "vgg16_bn": 14_723_136,
        "vgg19_bn": 20_035_392,
    }
    with shapes_only():  # counts from shapes: no weight drawn
        for name, count in expected.items():
            assert count_trainable(zoo.create_encoder(name)) == count, name


def test_unet_full_resolution_skip(tmp_path):
    # vgg13_bn's first stage (8 channels at base width 8) joins the last decoder block: its
    # first conv (3x3, 8 filters here) gains 8 input channels = 9 * 8 * 8 weights; nothing
    # else changes. An encoder without stride-1 features is unaffected.
    kw = {"encoder_kwargs": {"base_width": 8}, "decoder_channels": [16, 8]}
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    counts = {}
    for encoder in ("vgg13_bn", "resnet18"):
        for skip in (False, True):
            model = zoo.create_model(
                "unet", num_classes=1, encoder=encoder, full_resolution_skip=skip, **kw
            )
            assert model(x).shape == (1, 32, 32, 1)
            counts[encoder, skip] = count_trainable(model)
    assert counts["vgg13_bn", True] - counts["vgg13_bn", False] == 9 * 8 * 8
    assert counts["resnet18", True] == counts["resnet18", False]
    # The option is saved with the model: a reloaded VGG U-Net computes the same logits.
    model = zoo.create_model(
        "unet", num_classes=1, encoder="vgg13_bn", full_resolution_skip=True, **kw
    )
    path = tmp_path / "vgg_unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_config()["full_resolution_skip"] is True
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="full_resolution_skip='yes'"):
        zoo.create_model("unet", full_resolution_skip="yes")


def test_resnet_encoder_matches_torchvision_param_count():
    # torchvision resnet18 / resnet34 without the 512x1000 classifier (513,000 params).
    with shapes_only():  # counts from shapes: no weight drawn
        assert count_trainable(zoo.create_encoder("resnet18")) == 11_689_512 - 513_000
        assert count_trainable(zoo.create_encoder("resnet34")) == 21_797_672 - 513_000


# --- Fidelity and size ------------------------------------------------------------------


def test_unet_resnet34_param_count_matches_smp():
    with shapes_only():  # counts from shapes: no weight drawn
        model = zoo.create_model("unet", num_classes=1, encoder="resnet34")
        assert count_trainable(model) == 24_436_369


def test_deeplab_lite_default_stays_under_3m_params():
    with shapes_only():  # counts from shapes: no weight drawn
        model = zoo.create_model("deeplab_lite", num_classes=1)
        assert model.count_params() < 3_000_000


def test_batch_norm_helper_gives_global_batch_statistics_across_replicas(mirrored_strategy):
    import tensorflow as tf

    from zoo.layers import batch_norm

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3, 3, 2)) * [1.0, 5.0] + [0.0, 3.0]).astype(np.float32)
    # Independent NumPy reference: normalize with the statistics of the whole batch.
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - mean) / np.sqrt(var + 1e-5)
    strategy = mirrored_strategy
    with strategy.scope():
        bn = batch_norm("bn")
        bn.build(x.shape)
    halves = strategy.experimental_distribute_values_from_function(
        lambda ctx: x[2 * ctx.replica_id_in_sync_group : 2 * ctx.replica_id_in_sync_group + 2]
    )
    out = strategy.run(tf.function(lambda t: bn(t, training=True)), args=(halves,))
    got = np.concatenate([np.asarray(o) for o in strategy.experimental_local_results(out)])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # One replica, no strategy: the same numbers.
    np.testing.assert_allclose(np.asarray(batch_norm("bn1")(x, training=True)), expected, atol=1e-4)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_batch_norm_fused_path_matches_keras_layer(policy):
    # One replica: zoo's batch norm runs TF's FusedBatchNormV3 (the kernel returns an unbiased
    # variance; Keras keeps the biased one). Reference: Keras' own BatchNormalization.
    import keras
    import tensorflow as tf

    from zoo.layers import batch_norm

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(3.0, 2.0, (4, 5, 6, 8)).astype("float32"))
    upstream = tf.constant(rng.normal(size=x.shape).astype("float32"))
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        ours = batch_norm("ours")
        ref = keras.layers.BatchNormalization(momentum=ours.momentum, epsilon=ours.epsilon)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    for layer in (ours, ref):
        layer.build(x.shape)
    ours.gamma.assign(rng.uniform(0.5, 2.0, 8))
    ours.beta.assign(rng.normal(size=8))
    ref.set_weights(ours.get_weights())

    def run(layer):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
            return y, tape.gradient(loss, [x, layer.gamma, layer.beta])

        y, grads = step(x)
        graph = step.get_concrete_function(x).graph.as_graph_def()
        fused = any(n.op.startswith("FusedBatchNorm") for n in graph.node)
        stats = [np.asarray(v) for v in (layer.moving_mean, layer.moving_variance)]
        return fused, [y, *grads, *stats, layer(x, training=False)]

    fused, got = run(ours)
    ref_fused, want = run(ref)
    assert fused and not ref_fused
    tol = 1e-5 if policy == "float32" else 2e-2
    names = ["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance", "y_inference"]
    for name, a, b in zip(names, got, want):
        a, b = (np.asarray(tf.cast(t, "float32")) for t in (a, b))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)
    if policy == "mixed_bfloat16":
        assert got[0].dtype == tf.bfloat16
    # Independent NumPy check of the moving statistics (momentum 0.9, biased variance).
    xn = x.numpy()
    m = 0.9
    np.testing.assert_allclose(got[4], (1 - m) * xn.mean((0, 1, 2)), rtol=tol)
    np.testing.assert_allclose(got[5], m + (1 - m) * xn.var((0, 1, 2)), rtol=tol)


def test_unknown_argument_raises_naming_it_and_the_valid_ones(tiny):
    name, _ = tiny
    with pytest.raises(ValueError, match=r"Unknown argument bogus=3 .*valid arguments: .*encoder"):
        build_tiny(name, bogus=3)
    with pytest.raises(ValueError, match=r"encoder_weights='no-such-weights-source'"):
        build_tiny(name, encoder_weights="no-such-weights-source")


def test_loading_never_rereads_encoder_weight_sources(tmp_path, monkeypatch):
    # A model built with encoder_kwargs.weights="imagenet" must load from its own file: record
    # what the keras.applications constructor is asked for (and never download).
    import dataclasses

    from zoo.encoders import applications

    asked = []
    spec = applications.SPECS["keras_mobilenetv2"]

    def app(**kwargs):
        asked.append(kwargs["weights"])
        return spec.app(**{**kwargs, "weights": None})

    monkeypatch.setitem(applications.SPECS, "keras_mobilenetv2", dataclasses.replace(spec, app=app))
    model = build_tiny(
        "unet", encoder="keras_mobilenetv2", encoder_kwargs={"alpha": 0.35, "weights": "imagenet"}
    )
    images, _ = fixed_batch(1, 64, 64, num_classes=2)
    loaded = assert_save_load_identical(model, images, tmp_path / "m.keras")
    assert asked == ["imagenet", None]
    assert loaded.get_config()["encoder_kwargs"]["weights"] == "imagenet"  # provenance kept


def test_fpn_smp_options_validate_and_build():
    with pytest.raises(ValueError, match=r"decoder_norm='layer'"):
        build_tiny("fpn", decoder_norm="layer")
    with pytest.raises(ValueError, match=r"multiple of 32. Received: segmentation_channels=8"):
        build_tiny("fpn", decoder_norm="group")
    with pytest.raises(ValueError, match=r"align_corners='yes'"):
        build_tiny("fpn", align_corners="yes")
    model = build_tiny("fpn", decoder_norm="group", segmentation_channels=32, align_corners=True)
    names = {layer.name for layer in model.layers}
    assert "decoder_p32_stage1_gn" in names and "decoder_p32_stage1_bn" not in names
    out = model(np.zeros((1, 64, 64, 3), np.float32))
    assert tuple(out.shape) == (1, 64, 64, 2)
