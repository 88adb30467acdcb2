"""Schemathesis against the operator API in /openapi.json, logged in: no input makes a server error.

Each operation gets a bounded number of generated requests (valid and invalid bodies,
odd path values, huge numbers), sent with an operator's session cookie and CSRF token,
against a real (embedded) broker so that sending settings really publishes them.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from jisaku.dashboard.app import create_app
from jisaku.dashboard.operator import ConfigPublisher
from jisaku.dashboard.operator.auth import COOKIE
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.secrets import new_secret

from .brokers import EmbeddedBrokerThread

PASSWORD = "fuzzing operator's password"


@pytest.fixture(scope="module")
def logged_in(tmp_path_factory):
    """The app, an admin's session cookie and CSRF token; the broker and publisher behind it."""
    directory = tmp_path_factory.mktemp("fuzz")
    secret = new_secret()
    broker = EmbeddedBrokerThread({"_tester": secret})
    publisher = ConfigPublisher(f"mqtt://127.0.0.1:{broker.port}", "_tester", secret)
    db = Database(directory / "jisaku.db")
    registry = Registry(db)
    registry.add_device(DeviceRecord("snow-5", "snow_gauge", name="Snow", interval_s=600, lat=36.1, lon=137.2))
    registry.add_device(DeviceRecord("tray-1", "printer_tray"))
    Accounts(db).add("admin", PASSWORD, role="admin")
    app = create_app(directory / "jisaku.db", tiles="osm", config_publisher=publisher)
    answer = TestClient(app).post("/api/v1/operator/login", json={"name": "admin", "password": PASSWORD})
    login = answer.json()
    yield app, answer.cookies[COOKIE], login["csrf_token"]
    publisher.stop()
    broker.stop()


def test_operator_api_has_no_server_errors(logged_in):
    app, cookie, csrf = logged_in
    # Logging out would end the session the other operations are fuzzed with; it has its own tests.
    schema = (schemathesis.openapi.from_asgi("/openapi.json", app)
              .include(path_regex="^/api/v1/operator/")
              .exclude(path="/api/v1/operator/logout"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, "the operator API is in the OpenAPI document"
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case):
            response = case.call(headers={"X-CSRF-Token": csrf}, cookies={COOKIE: cookie})
            case.validate_response(response, checks=[not_a_server_error])

        no_server_error()
