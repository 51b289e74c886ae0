"""The shipped configs, by name: sizes (``cpu``, ``gpu``) and methods (``joint``, ``recipe``, ``mkd``, ...).

One home for every config a user or a study composes from: ``mkdseg fit --config cpu --config recipe`` reads the
same files ``mkdseg compare --size cpu --methods recipe`` trains, and ``configs/`` holds only the paper's full config
and overlays.
"""

from __future__ import annotations

from pathlib import Path

PRESETS = Path(__file__).parent / "compare" / "presets"
SIZES = PRESETS
METHODS = PRESETS / "methods"


def size_names() -> list[str]:
    return sorted(p.stem for p in SIZES.glob("*.yaml"))


def method_names() -> list[str]:
    return sorted(p.stem for p in METHODS.glob("*.yaml"))


def preset_path(name: str) -> Path | None:
    """The shipped config called ``name`` (a size or a method), or ``None``."""
    for folder in (SIZES, METHODS):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def resolve_config(value: str, kind: str, option: str) -> Path:
    """``value`` as a config file: a shipped preset of ``kind`` (``"size"`` or ``"method"``) by its name, or a yaml file
    of the user's (by its absolute path). Errors name ``option``, the command-line option that gave ``value``."""
    folder, names, noun = {"size": (SIZES, size_names, "preset"), "method": (METHODS, method_names, "method")}[kind]
    path = Path(value)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"{option}: no such {kind} config {path}")
        return path.resolve()
    preset = folder / f"{value}.yaml"
    if not preset.is_file():
        raise ValueError(f"{option}: unknown {noun} {value!r}; presets: {', '.join(names())}, or a .yaml file")
    return preset


def config_argument(path: Path) -> str:
    """What ``--config`` takes for ``path``: a shipped preset by its name (``mkdseg fit --config cpu``), any other
    config by its path."""
    return path.stem if preset_path(path.stem) == path else str(path)


def with_preset_paths(args: list[str]) -> list[str]:
    """``args`` with each ``--config NAME`` (or ``--config=NAME``) that names no file but a preset given its path."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = _resolved(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _resolved(arg.removeprefix("--config="))
    return out


def _resolved(value: str) -> str:
    if Path(value).exists() or Path(value).suffix:
        return value
    path = preset_path(value)
    return str(path) if path is not None else value
