from pathlib import Path

import pytest

from jisaku.contract import settings


def test_defaults_file_and_environment(tmp_path):
    assert settings.load(tmp_path / "none.toml", environ={}).broker == "mqtt://127.0.0.1:1883"
    file = tmp_path / "jisaku.toml"
    file.write_text('broker = "mqtt://10.0.0.5:1883"\ndata = "/var/lib/jisaku"\n')
    loaded = settings.load(file, environ={"JISAKU_BROKER": "mqtt://127.0.0.1:1884"})
    assert loaded.broker == "mqtt://127.0.0.1:1884"            # the environment wins
    assert loaded.sqlite_path == Path("/var/lib/jisaku/jisaku.db")
    assert loaded.http_host_port == ("127.0.0.1", 8000)


def test_mistakes_are_named(tmp_path):
    file = tmp_path / "jisaku.toml"
    file.write_text('brokr = "mqtt://x"\n')
    with pytest.raises(settings.SettingsError, match="unknown keys brokr"):
        settings.load(file, environ={})
    with pytest.raises(settings.SettingsError, match="host:port"):
        settings.load(file, environ={"JISAKU_CONFIG": str(tmp_path / "x.toml"), "JISAKU_HTTP": "8000"}).http_host_port


def test_the_store_is_sqlite_by_default_or_influxdb_for_readings(tmp_path):
    default = settings.load(tmp_path / "none.toml", environ={"JISAKU_DATA": "/srv/jisaku"})
    assert (default.sqlite_path, default.influx_url) == (Path("/srv/jisaku/jisaku.db"), None)
    influx = settings.load(tmp_path / "none.toml", environ={
        "JISAKU_DATA": "/srv/jisaku", "JISAKU_STORE": "influxdb://token@db.local:8086/jisaku"})
    # The registry and latest state stay in SQLite; readings go to InfluxDB.
    assert (influx.sqlite_path, influx.influx_url) == (
        Path("/srv/jisaku/jisaku.db"), "influxdb://token@db.local:8086/jisaku")
    with pytest.raises(settings.SettingsError, match="influxdb://"):
        settings.load(tmp_path / "none.toml", environ={"JISAKU_STORE": "postgres://x"}).influx_url
