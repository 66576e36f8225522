"""Registry behaviour: decorator, create, list, errors and per-entry metadata."""

import pytest

import zoo
from zoo.registry import Registry


def test_decorator_create_and_list_with_patterns():
    registry = Registry("widget", required=("size",))

    @registry.register("small_widget", size=1, description="A small one.")
    def small(scale=1):
        return ("small", scale)

    @registry.register(size=2)
    class BigWidget:
        """Big widget."""

    assert registry.create("small_widget", scale=3) == ("small", 3)
    assert registry.list() == ["bigwidget", "small_widget"]
    assert registry.list("small*") == ["small_widget"]
    assert registry.list("*widget") == ["bigwidget", "small_widget"]
    assert registry.list("nothing*") == []
    assert registry.get("bigwidget").description == "Big widget."
    assert registry.get("small_widget").size == 1


def test_duplicate_name_raises_naming_first_registration():
    with pytest.raises(ValueError, match=r"'unet' is already registered .*zoo\.models\.unet"):
        zoo.register_model("unet", output_stride=1, tiny_config={})(object)


def test_missing_metadata_raises():
    registry = Registry("widget", required=("size",))
    with pytest.raises(ValueError, match=r"needs metadata \['size'\]"):
        registry.register("w")(object)


@pytest.mark.parametrize(
    "create, name, suggestion",
    [(zoo.create_model, "unett", "unet"), (zoo.create_encoder, "resnet43", "resnet34")],
)
def test_unknown_name_lists_choices_and_suggests_closest(create, name, suggestion):
    with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'") as info:
        create(name)
    assert "fpn" in str(info.value) or "resnet18" in str(info.value)


@pytest.mark.parametrize(
    "name, hint",
    [
        ("resnet35", "Did you mean 'resnet34' or 'resnet50'?"),  # equally close: both
        ("resnext50", "Did you mean 'resnext50_32x4d'?"),  # a name it begins
        ("se_resnet", "Did you mean 'se_resnet101', 'se_resnet152' or 'se_resnet50'?"),
    ],
)
def test_suggestions_name_every_equally_close_choice(name, hint):
    with pytest.raises(ValueError) as info:
        zoo.create_encoder(name)
    assert hint in str(info.value) and "\n" not in str(info.value)


def test_builtin_names_and_patterns():
    assert {"unet", "fpn", "deeplab_lite"} <= set(zoo.list_models())
    assert zoo.list_encoders("resnet*") == [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
    ]
    assert set(zoo.list_encoders("keras_*")) >= {
        "keras_resnet50",
        "keras_mobilenetv2",
        "keras_efficientnetv2b0",
        "keras_convnext_tiny",
    }


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_metadata(name):
    info = zoo.model_info(name)
    assert isinstance(info.divisor, int) and info.divisor >= 1
    assert isinstance(info.output_stride, int) and info.output_stride >= 1
    assert isinstance(info.tiny_config, dict)
    assert info.description


@pytest.mark.parametrize("name", zoo.list_encoders())
def test_encoder_metadata(name):
    info = zoo.encoder_info(name)
    assert isinstance(info.strides, tuple) and list(info.strides) == sorted(info.strides)
    assert isinstance(info.tiny_config, dict)
    assert isinstance(info.output_strides, tuple)
    if info.metadata.get("plain"):  # a ViT: every block at its patch stride
        assert len(info.strides) == 1 and info.output_strides == info.strides
    else:  # a pyramid
        assert info.strides[-1] == 32 and info.strides[0] in (1, 2, 4)  # 1: VGG
        assert 32 in info.output_strides
    assert isinstance(info.pretrained, bool)
    assert info.description


def test_divisor_is_declared_once_in_the_class():
    with pytest.raises(ValueError, match="takes no `divisor`"):
        zoo.register_model("another_net", divisor=32, output_stride=32, tiny_config={})
    # The registry's divisor is the class's, for the default arguments; instances follow theirs.
    unet = zoo.model_info("unet")
    assert unet.divisor == unet.obj.divisor_for() == 32
    assert unet.obj.divisor_for({"decoder_channels": [8, 8, 8]}) == 8
    assert zoo.model_info("deeplab_lite").obj.divisor_for({"output_stride": 8}) == 8
