"""Training runs: the loop (`train`), the backup format, resume rules, callbacks and signals.

loop.py       train(run, run_dir): setup -> build -> fit -> finalize
backup.py     the backup file format (what a resumed run needs)
resume.py     which backup to continue from; when a run directory may not be continued
callbacks.py  NaN guard, best checkpoint, backup, stop-on-signal, and their order
signals.py    SIGINT/SIGTERM -> backup and exit 130/143
fit.py        Keras fit over the run's length from any global step
length.py     how long a run trains (epochs, max_steps, time budget) and the budget's pacer
optim.py      optimizer and learning-rate schedule
averaging.py  validating and saving the weights' moving average (trainer.ema_momentum)
"""

from zoo.training.loop import train

__all__ = ["train"]
