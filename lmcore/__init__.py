"""lmcore: the small, tested PyTorch package behind *How Language Models Compute*.

Each module is named for the idea it teaches (``mlp``, ``rnn``, ``attention``...).
Start with :func:`lmcore.device.get_device` and :func:`lmcore.device.seed_everything`.
"""

__version__ = "0.1.0"

from .device import get_device, pick, seed_everything

__all__ = ["__version__", "get_device", "pick", "seed_everything"]
