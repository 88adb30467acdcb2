"""``jisaku quarantine`` tells an operator at the console what was set aside and why."""

from __future__ import annotations

import time

from jisaku.cli import main
from jisaku.gateway.db import Database
from jisaku.gateway.store import Batch, Quarantined, SQLiteStore


def test_counts_per_reason_and_the_newest_messages(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore(Database(tmp_path / "jisaku.db"))
    now = time.time()
    store.write(Batch(quarantined=[
        Quarantined("jisaku/snow-1/data", b"{oops", "not_json", "the payload is not JSON", now),
        Quarantined("jisaku/snow-1/data", b"{oops2", "not_json", "the payload is not JSON", now + 1),
        Quarantined("jisaku/ghost/data", b"{}", "unknown_device", "device 'ghost' is not registered", now + 2),
    ]))
    main(["quarantine", "--reason", "unknown_device"])
    out = capsys.readouterr().out
    assert "not_json" in out and " 2\n" in out and "unknown_device" in out
    assert "jisaku/ghost/data" in out and "jisaku/snow-1/data" not in out.split("newest")[1]
