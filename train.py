"""Train a segmentation model: `python train.py model=unet loss=wbce+dice` (docs/training.md).

Also `mode=evaluate checkpoint=...` and `mode=predict checkpoint=... predict.input=...
predict.output=...`. User errors (bad config values, bad data) end with one line on stderr and
exit code 1; set HYDRA_FULL_ERROR=1 for the traceback.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from zoo.config import register_configs  # noqa: E402
from zoo.distribute import hydra_worker_overrides  # noqa: E402

register_configs()

# Errors that describe bad input rather than a bug: shown as one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from zoo.app import run  # heavy imports after Hydra has parsed the command line

    try:
        return run(cfg, HydraConfig.get().runtime.output_dir)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(f"Error: {err}")


if __name__ == "__main__":
    # Multi-worker runs: only the chief writes Hydra's files and train.log into the run dir.
    sys.argv.extend(hydra_worker_overrides())
    main()
