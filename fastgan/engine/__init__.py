from .config import Diverged, TrainConfig, UserError
from .iteration import Engine, EngineOptions
from .run import Run, train

__all__ = ["Engine", "EngineOptions", "TrainConfig", "Run", "train", "UserError", "Diverged"]
