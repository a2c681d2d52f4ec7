"""The `XConfig` + `X` pattern of nerfstudio for core modules that must not import nerfstudio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Type


@dataclass
class InstantiateConfig:
    """A config whose `_target` class is built with the config as first argument."""

    _target: Type

    def setup(self, **kwargs: Any) -> Any:
        return self._target(self, **kwargs)
