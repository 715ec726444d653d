"""The presets: one TOML file each in ``configs/``, the only place a preset is
defined, so a name means one model everywhere (``python -m models --preset``,
``python -m train --config``, the demo).

A preset's ``[model]`` table changes ``WorldModelConfig``'s fields; its other
tables are training's (``train.config``). ``extends = "NAME"`` at the top
starts from another preset's tables, each key of this file replacing its own.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from models.config import WorldModelConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def read_preset(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset's tables by name (``configs/<name>.toml``) or a TOML path, with
    the preset it ``extends`` merged under it; ``ValueError`` names the file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(f"no config {str(name_or_path)!r} (looked for {path}); presets: "
                         f"{', '.join(preset_names())}")
    if path.resolve() in _seen:
        raise ValueError(f"{path}: extends itself through {', '.join(map(str, _seen))}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: {err}") from None
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ValueError(f"{path}: extends must name a preset, got {parent!r}")
    return _merged(read_preset(parent, (*_seen, path.resolve())), data)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (_merged(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def preset(name: str, **overrides: Any) -> WorldModelConfig:
    """The model of a preset (``configs/<name>.toml``), with optional field overrides."""
    model = read_preset(name).get("model", {})
    return WorldModelConfig.from_dict({**model, **overrides})
