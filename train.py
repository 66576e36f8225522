"""Train a segmentation model: `python train.py model=unet loss=wbce+dice` (docs/training.md).

Also `mode=evaluate checkpoint=...` and `mode=predict checkpoint=... predict.input=...
predict.output=...`. Errors caused by the input (config values, data, files: `zoo.errors.
UserError`) end with one line on stderr and exit code 1; set HYDRA_FULL_ERROR=1 for the
traceback. Anything else is a bug and keeps its traceback. In a `--multirun` sweep a failed job
is recorded (error.json in its directory, a row in comparison.md) and the sweep goes on.
"""

import os
import sys
import time

PROCESS_START = time.monotonic()  # the time budget's whole-process rule counts from here
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from zoo.config import register_configs  # noqa: E402
from zoo.distribute import hydra_worker_overrides  # noqa: E402
from zoo.errors import UserError  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from zoo.app import run  # heavy imports after Hydra has parsed the command line

    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    # In a sweep each job is its own "process" for the time budget.
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    started = time.monotonic() if multirun else PROCESS_START
    try:
        return run(cfg, run_dir, process_start=started)
    except Exception as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            from zoo.sweep import record_failure

            record_failure(run_dir, err)
            if not isinstance(err, UserError):
                import traceback

                traceback.print_exc()
            print(f"Error: {err}", file=sys.stderr)
            return None
        if not isinstance(err, UserError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(f"Error: {err}")


if __name__ == "__main__":
    from zoo.app import unwritable_output

    if problem := unwritable_output(sys.argv[1:]):
        sys.exit(f"Error: {problem}")
    # Multi-worker runs: only the chief writes Hydra's files and train.log into the run dir.
    sys.argv.extend(hydra_worker_overrides())
    main()
