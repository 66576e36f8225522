"""Compose every option of every config group; config errors fail fast with clear messages."""

import re
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
    for group in ("model", "data", "strategy", "trainer", "recipe", "experiment")
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
    run = validate(make([]))
    assert (run.model.name, run.loss.spec, run.data.name, run.strategy.name) == (
        "unet",
        "wbce+dice",
        "shapes",
        "default",
    )


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize(
    "override", ["model.encoder_kwargs={base_width:16}", "+model.encoder_kwargs.base_width=16"]
)
def test_encoder_kwargs_override_forms(model, override):
    # docs/models.md writes the first form: a `{}` default would reject it (struct mode).
    run = validate(make([f"model={model}", override]))
    assert run.model.kwargs["encoder_kwargs"] == {"base_width": 16}


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


@pytest.mark.parametrize(
    "overrides,text",
    [
        # Item 1 / 12 of the correctness issue: step counts and numbers out of range.
        (["trainer.validation_steps=0"], "trainer.validation_steps=0"),
        (["trainer.validation_steps=-1"], "trainer.validation_steps=-1"),
        (["trainer.steps_per_epoch=-1"], "trainer.steps_per_epoch=-1"),
        (["trainer.steps_per_epoch=0"], "trainer.steps_per_epoch=0"),
        (["trainer.learning_rate=nan"], "trainer.learning_rate=nan"),
        (["trainer.learning_rate=inf"], "trainer.learning_rate=inf"),
        (["trainer.warmup_steps=-5"], "trainer.warmup_steps=-5"),
        (["trainer.clipnorm=-1.0"], "trainer.clipnorm=-1.0"),
        (["trainer.ema_momentum=1.0"], "trainer.ema_momentum=1.0"),
        (["trainer.momentum=1.5"], "trainer.momentum=1.5"),
        (["trainer.backup_every_steps=0"], "trainer.backup_every_steps=0"),
        (["predict.threshold=0"], "predict.threshold=0"),
        # Tiled prediction options (mode=predict / evaluate, final_eval=full_resolution).
        (["predict.tile=24x"], "predict.tile='24x'; expected 'auto', 'whole'"),
        (
            ["predict.overlap=1.0"],
            r"predict.overlap=1.0; expected a fraction of the tile in \[0, 1\)",
        ),
        (["predict.tta=rot"], "predict.tta='rot'; expected one of none, hflip, flip, d4"),
        (["predict.blend=max"], "predict.blend='max'"),
        (["predict.batch_size=0"], "predict.batch_size=0"),
        (["predict.probabilities=tif"], "predict.probabilities='tif'"),
        (["trainer.final_eval=native"], "trainer.final_eval='native'; choose one of"),
        (["trainer.final_eval=full_resolution"], "final_eval=full_resolution .* needs data=folder"),
        # A typo in the monitored metric would leave an old best.keras: caught, with a hint.
        (["trainer.monitor=val_dise"], "Did you mean 'val_dice'"),
        # The training size must suit the model's divisor.
        (["data.image_size=[50,50]"], "needs multiples of 32"),
        (["model.decoder_channels=[16,8,8]", "data.image_size=[60,64]"], "needs multiples of 8"),
        # An explicit loss that does not fit the data's mode names the terms that do.
        (["data.num_classes=5", "loss=wbce+dice"], r"term .wbce. supports binary.* loss=wce\+dice"),
        # Model values are typed by the constructor signature, before any data is read.
        (["model.decoder_channels=16"], "model.decoder_channels=16 .*a list of int"),
        (["model=fpn", "model.dropout=high"], "model.dropout='high' .*float"),
        (["model.encoder=3"], "model.encoder=3 .*str"),
    ],
)
def test_bad_values_fail_in_one_line_before_anything_is_built(overrides, text):
    with pytest.raises(ConfigError, match=text) as info:
        validate(make(overrides))
    assert "\n" not in str(info.value)


def test_default_loss_follows_the_data_mode():
    assert validate(make([])).loss.spec == "wbce+dice"
    run = validate(make(["data.num_classes=5"]))  # the multiclass example of docs/data.md
    assert (run.loss.spec, run.loss.mode) == ("wce+dice", "multiclass")


def test_padded_models_take_any_training_size():
    validate(make(["data.image_size=[50,50]", "model.pad_to_divisor=true"]))


def test_predict_options_from_config_are_normalized():
    from zoo.config import predict_options

    run = validate(make(["predict.tile=[64,96]", "predict.tta=d4", "predict.probabilities=png"]))
    options = predict_options(run.predict)
    assert (options.tile, options.tta, options.probabilities) == ((64, 96), "d4", "png")
    assert predict_options(validate(make(["predict.tile=whole"])).predict).tile is None
    assert predict_options(validate(make([])).predict).tile == "auto"
    # tta null (the default): the model's own (metadata "tta"), resolved by the predictor.
    assert predict_options(validate(make([])).predict).tta is None
    assert predict_options(validate(make(["predict.tta=none"])).predict).tta == "none"


# --- How long a run trains: trainer.time_budget / max_steps / epochs ----------------------------


def test_the_command_line_wins_over_a_config_file_for_the_length():
    # experiment=quick sets trainer.epochs=1; a budget on the command line replaces it.
    run = validate(make(["experiment=quick", "trainer.time_budget=30s"]), {"trainer.time_budget"})
    assert (run.trainer.epochs, run.trainer.time_budget) == (None, "30s")
    assert run.resolved["trainer"]["epochs"] is None  # config.yaml records what is used
    # And the other way round: epochs on the command line, a budget from a file.
    run = validate(make(["trainer.time_budget=30s", "trainer.epochs=3"]), {"trainer.epochs"})
    assert (run.trainer.epochs, run.trainer.time_budget) == (3, None)
    # A budget capped by max_steps is fine.
    run = validate(make(["trainer.time_budget=2m", "trainer.max_steps=500"]))
    assert (run.trainer.time_budget, run.trainer.max_steps) == ("2m", 500)


@pytest.mark.parametrize(
    "overrides,explicit,text",
    [
        (["trainer.time_budget=1m", "trainer.epochs=3"], {"trainer.time_budget", "trainer.epochs"},
         "trainer.epochs=3 and trainer.time_budget=1m are both set on the command line"),
        (["trainer.max_steps=100", "trainer.epochs=3"], {"trainer.max_steps", "trainer.epochs"},
         "trainer.epochs=3 and trainer.max_steps=100 are both set on the command line"),
        (["trainer.time_budget=1m", "trainer.epochs=3"], None, "are both set; give one of them"),
        (["trainer.val_every_steps=3", "trainer.steps_per_epoch=4"], None, "give one of them"),
        (["trainer.time_budget=3 parsecs"], None, "trainer.time_budget='3 parsecs'"),
        (["trainer.time_budget=0s"], None, "expected a positive duration such as 90s, 3m, 1h"),
        (["trainer.max_steps=0"], None, "trainer.max_steps=0"),
        (["trainer.val_every_steps=-2"], None, "trainer.val_every_steps=-2"),
    ],
)  # fmt: skip
def test_length_conflicts_and_bad_budgets_are_one_line(overrides, explicit, text):
    from zoo.errors import UserError

    with pytest.raises(ConfigError, match=re.escape(text)) as info:
        validate(make(overrides), explicit)
    assert "\n" not in str(info.value) and isinstance(info.value, UserError)


def test_recipe_composes_with_other_groups():
    cfg = make(["recipe=auto", "data=folder", "data.root=/x", "model=fpn", "strategy=one_device"])
    assert cfg.recipe.name == "auto" and cfg.data.name == "folder" and cfg.model.name == "fpn"
    assert make([]).get("recipe") is None  # off by default
    with pytest.raises(ConfigCompositionException, match="recipe"):
        make(["recipe=manual"])


def test_parsing_leaves_tensorflow_uninitialized():
    # MultiWorkerMirroredStrategy must configure its collectives before TensorFlow's context
    # starts, and the config is parsed before the strategy exists (a fresh process: this one
    # has TensorFlow running).
    import subprocess
    import sys

    code = (
        "from hydra import compose, initialize_config_dir\n"
        "from tensorflow.python.eager import context\n"
        "from zoo.config import parse, register_configs\n"
        "register_configs()\n"
        f"with initialize_config_dir(version_base='1.3', config_dir={str(CONF)!r}):\n"
        "    cfg = compose(config_name='config', overrides=['strategy=multi_worker',"
        " '+loss_options.wbce.pos_weight=2.0', 'trainer.time_budget=1m'])\n"
        "parse(cfg)\n"
        "print('initialized', context.context()._initialized)\n"
    )
    root = CONF.parent
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert "initialized False" in proc.stdout, proc.stderr[-2000:]
