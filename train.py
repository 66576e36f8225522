"""Train a segmentation model: `python train.py model=unet loss=wbce+dice` (docs/training.md)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from zoo.config import register_configs  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from zoo.app import run  # heavy imports after Hydra has parsed the command line

    return run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
