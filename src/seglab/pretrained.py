"""Old import path of :mod:`seglab.artifacts.pretrained` (kept so existing imports work)."""

from seglab.artifacts.pretrained import (
    CONFIG_FILE,
    DEFAULT_MEAN,
    DEFAULT_STD,
    WEIGHTS_FILE,
    from_pretrained,
    read_config,
    save_pretrained,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "WEIGHTS_FILE",
    "from_pretrained",
    "read_config",
    "save_pretrained",
]
