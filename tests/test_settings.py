from pathlib import Path

import pytest

from jisaku import settings


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
