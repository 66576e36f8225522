"""Compose every option of every config group; config errors fail fast with clear messages."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

import zoo
from zoo.config import ConfigError, register_configs, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()

# Options that cannot validate without user input get it here (keyed by group/option).
NEEDS = {"data/folder": ["data.root=/nonexistent/for-compose-test"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides)


GROUP_OPTIONS = [
    (group, option)
    for group in ("model", "data", "strategy", "trainer", "experiment")
    for option in options(group)
]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_and_validates(group, option):
    cfg = make([f"{group}={option}", *NEEDS.get(f"{group}/{option}", [])])
    if group != "experiment":
        assert cfg[group].get("name", option) == option
    validate(cfg)


def test_every_registered_model_has_a_config():
    assert set(options("model")) == set(zoo.list_models())


def test_defaults_are_the_main_job():
    cfg = make([])
    assert (cfg.model.name, cfg.loss, cfg.data.name, cfg.strategy.name) == (
        "unet",
        "wbce+dice",
        "shapes",
        "default",
    )


@pytest.mark.parametrize("spec", ["wbce+dice", "0.5*wbce+dice", "[wbce,dice]", "dice+wbce"])
def test_loss_spec_forms(spec):
    validate(make([f"loss={spec}"]))


def test_term_options_from_the_command_line():
    validate(make(["+loss_options.wbce.pos_weight=2.0"]))
    with pytest.raises(ConfigError, match="loss_options.wbce"):
        validate(make(["+loss_options.wbce.pos_wieght=2.0"]))


@pytest.mark.parametrize(
    "overrides,exc,text",
    [
        (["model=unte"], ConfigCompositionException, "unte"),
        (["trainer.epocs=3"], ConfigCompositionException, "epocs"),
        (["trainer.epochs=many"], ConfigCompositionException, "epochs"),
        (["data.num_classes=two"], ConfigCompositionException, "num_classes"),
        (["strategy=mirorred"], ConfigCompositionException, "mirorred"),
        (["model.decoder_chanels=[8]"], ConfigCompositionException, "decoder_chanels"),
    ],
)
def test_composition_errors(overrides, exc, text):
    with pytest.raises((exc, ConfigKeyError, ValidationError), match=text):
        make(overrides)


@pytest.mark.parametrize(
    "overrides,text",
    [
        (["loss=wbce+dcie"], "dcie"),
        (["loss=-1*wbce"], "wbce"),
        (["+loss_options.nope.x=1"], "nope"),
        (["trainer.precision=float8"], "float8"),
        (["trainer.optimizer=adamx"], "adamx"),
        (["data.num_classes=0"], "num_classes"),
        (["mode=explain"], "explain"),
        (["mode=predict"], "checkpoint"),
        (["+model.nonsense=1"], "nonsense"),
    ],
)
def test_semantic_errors_name_the_key(overrides, text):
    with pytest.raises(ConfigError, match=text) as info:
        validate(make(overrides))
    assert "\n" not in str(info.value)
