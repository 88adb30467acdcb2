"""Shared fixtures. In CI (CI=true) a missing server fails the run instead of skipping."""

from __future__ import annotations

import os
import shutil

import pytest

from .brokers import mosquitto_available
from .town import Town

IN_CI = os.environ.get("CI") == "true"


def require(available: bool, what: str, install: str) -> None:
    """Skip a test whose server is missing on a laptop; fail it in CI."""
    if available:
        return
    message = f"{what} is not installed: {install} (make test does this when run as root)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_kind(request) -> str:
    if request.param == "mosquitto":
        require(mosquitto_available(), "Mosquitto", "sudo apt-get install mosquitto")
    return request.param


@pytest.fixture
def make_town(tmp_path, broker_kind):
    """``make_town(devices)`` starts a town on the parametrized broker; closed after the test."""
    towns: list[Town] = []

    def make(devices=(), **options) -> Town:
        town = Town(tmp_path / f"town{len(towns)}", broker_kind, devices, **options)
        towns.append(town)
        return town

    yield make
    for town in towns:
        town.close()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path is not None, "Chromium", "sudo apt-get install chromium")
    return path
