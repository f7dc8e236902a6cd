"""Reading tokenwatt's YAML data files (regions, hardware) and the users' own additions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tokenwatt.errors import ConfigError


def read_section(path: str, key: str, env_var: str, what: str) -> dict[Any, Any]:
    """The top-level `key:` mapping of a YAML file; a ConfigError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{env_var}: {what} file {path!r} does not exist; fix the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML ({e.__class__.__name__}); fix it") from None
    section = data.get(key) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: expected a top-level '{key}:' mapping of name -> profile")
    return section
