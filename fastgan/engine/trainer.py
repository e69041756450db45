"""The trainer's former home, kept for its importers: the run's settings are in config.py, the
checks in validate.py, the Run in run.py and the loop's pieces in loop/."""
from .config import (DEFAULTS, FIXED_ON_RESUME, RESUMED_FIELDS, Diverged, TrainConfig,
                     UserError, merge_resumed)
from .loop.signals import StopSignals
from .run import Run, train
from .validate import (check_batch_statistics, check_out_dir, check_settings, make_out_dir,
                       pick_device)

__all__ = ["DEFAULTS", "FIXED_ON_RESUME", "RESUMED_FIELDS", "Diverged", "TrainConfig",
           "UserError", "merge_resumed", "StopSignals", "Run", "train", "check_batch_statistics",
           "check_out_dir", "check_settings", "make_out_dir", "pick_device"]
