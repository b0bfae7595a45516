"""Training loops, checkpoints and run directories."""

from .loop import read_config, read_metrics, train

__all__ = ["train", "read_config", "read_metrics"]
