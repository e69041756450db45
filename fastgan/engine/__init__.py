from .iteration import Engine, EngineOptions
from .trainer import Diverged, Run, TrainConfig, UserError, train

__all__ = ["Engine", "EngineOptions", "TrainConfig", "Run", "train", "UserError", "Diverged"]
