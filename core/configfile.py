"""Reading a YAML configuration file (shipped default or the operator's own) with errors that name it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError


def read_yaml(path: str | Path | None, *, package: str, default: str) -> tuple[Any, str]:
    """The parsed document and a name for it in messages: path, or the packaged default `package/default`."""
    if path is None:
        text = resources.files(package).joinpath(default).read_text(encoding="utf-8")
        source = f"{package}/{default}"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        source = str(path)
    try:
        return yaml.safe_load(text), source
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
