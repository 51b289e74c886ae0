"""A comparison's configs: its size and its methods, each a shipped preset by name or a yaml file of the user's
(:func:`mkdseg.presets.resolve_config`), and the iteration budget a method's stages get."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import yaml

from mkdseg.presets import resolve_config

#: a method's first stage (FineTune's pre-training): given the iteration budget N too, unless its yaml sets it
STAGE_KEYS = ("pretrain_steps", "translation_steps")


@dataclass(frozen=True)
class Method:
    name: str
    path: Path

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.path.read_text()) or {}

    @property
    def model_class(self) -> type:
        """The method class its ``model.class_path`` names (``ValueError`` naming the yaml if it does not import)."""
        class_path = (self.config.get("model") or {}).get("class_path", "")
        module, _, cls_name = class_path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"{self.path}: model.class_path {class_path!r} cannot be imported: {e}") from e

    @property
    def needs_unlabelled_target(self) -> bool:
        return bool((self.config.get("data") or {}).get("unlabelled_target"))

    @property
    def stage_keys(self) -> list[str]:
        """The first-stage budgets (:data:`STAGE_KEYS`) its class takes."""
        accepted = inspect.signature(self.model_class.__init__).parameters
        return [key for key in STAGE_KEYS if key in accepted]


def resolve_method(name: str) -> Method:
    """A preset's name (``joint``, ``recipe``, ...) or a yaml file of the user's."""
    path = resolve_config(name, "method", "--methods")
    return Method(path.stem, path)


def resolve_size(name: str) -> Path:
    """The size config: ``cpu``, ``gpu`` or a yaml file of the user's."""
    return resolve_config(name, "size", "--size")


def stage_overrides(method: Method, budget: int) -> list[str]:
    """``--trainer.max_steps``: N, or N + N for a method with a first stage its yaml leaves at N."""
    given = ((method.config.get("model") or {}).get("init_args") or {})
    stage = 0
    out = []
    for key in method.stage_keys:
        stage = int(given.get(key, budget))
        out.append(f"--model.init_args.{key}={stage}")
    return [*out, f"--trainer.max_steps={budget + stage}"]
