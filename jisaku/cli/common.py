"""What several commands share: the settings of jisaku.toml, and the registry they name."""

from __future__ import annotations

from jisaku.contract import settings as settings_module
from jisaku.contract.settings import Settings


def load_settings() -> Settings:
    return settings_module.load()


def open_registry(settings: Settings):
    """The device registry in the settings' SQLite file."""
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import Registry

    return Registry(Database(settings.sqlite_path))
