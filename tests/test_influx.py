"""InfluxStore against a real influxd (Debian's influxdb package): what lands, what comes back, the spool."""

from __future__ import annotations

from decimal import Decimal

import base64
import json
import time
import urllib.parse
import urllib.request

import pytest

from jisaku.contract.protocol import Reading
from jisaku.gateway.influx import InfluxStore, InfluxWriteError, line, ts_to_ns

from .conftest import require
from .influx_server import InfluxServer, influxd_available


@pytest.fixture
def server(tmp_path):
    require(influxd_available(), "InfluxDB", "sudo apt-get install influxdb")
    with InfluxServer(tmp_path / "influxd") as s:
        yield s


@pytest.fixture
def store(server, tmp_path):
    s = InfluxStore(server.url, tmp_path / "spool", timeout_s=2.0, retry_s=0.0)
    yield s
    s.close()


def query(server: InfluxServer, q: str, auth: tuple[str, str] | None = None) -> list[dict]:
    """Ask influxd directly (not through InfluxStore) what it holds."""
    params = urllib.parse.urlencode({"db": "jisaku", "q": q, "epoch": "ns"})
    request = urllib.request.Request(f"{server.http_url}/query?{params}")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["results"][0].get("series", [])


T0 = round(time.time(), 3) - 3600.0


def test_readings_land_and_read_back_identical(store, server):
    readings = [
        ("snow-1", Reading(T0 + 0.001, 1, {"depth_cm": 12.5, "temp_c": -3})),
        ("snow-1", Reading(T0 + 1.25, 2, {"depth_cm": 12.75, "temp_c": -2.5, "ok": True})),
        ("snow-1", Reading(T0 + 2.999, 3, {"depth_cm": 13.0, "ok": False, "state": "melting"})),
        ("bus-7", Reading(T0 + 0.5, 41, {"lat": 35.6812, "lon": 139.7671, "speed_kmh": 0})),
    ]
    store.write_readings(readings)
    assert store.spooled() == 0

    got = store.readings("snow-1")
    assert [r["seq"] for r in got] == [1, 2, 3]
    for (_, sent), back in zip(readings[:3], got):
        assert back["ts"] == sent.ts  # exact, not only to the millisecond
        assert back["v"] == sent.values
    assert store.readings("bus-7") == [{"ts": T0 + 0.5, "seq": 41,
                                        "v": {"lat": 35.6812, "lon": 139.7671, "speed_kmh": 0}}]
    assert store.reading_count() == 4
    assert store.reading_count("snow-1") == 3
    assert store.reading_count("nobody") == 0
    assert store.readings("nobody") == []

    # What landed: the schema in the module docstring, straight from influxd.
    fields = {row[0]: row[1] for row in query(server, "SHOW FIELD KEYS FROM reading")[0]["values"]}
    assert fields == {"seq": "integer", "depth_cm": "float", "temp_c": "float", "ok": "boolean",
                      "state": "string", "lat": "float", "lon": "float", "speed_kmh": "float"}
    tags = query(server, 'SHOW TAG VALUES FROM reading WITH KEY = "device"')[0]["values"]
    assert sorted(v for _, v in tags) == ["bus-7", "snow-1"]
    first = query(server, "SELECT * FROM reading WHERE device = 'snow-1' LIMIT 1")[0]
    # The float's own decimal digits, to the nanosecond: what was sent is what is kept.
    assert dict(zip(first["columns"], first["values"][0]))["time"] == int(Decimal(repr(T0 + 0.001)) * 10**9)
    assert ts_to_ns(1795400236.456) == 1795400236456000000


def test_since_until_and_limit(store):
    store.write_readings([("g-1", Reading(T0 + i, i, {"x_pct": float(i)})) for i in range(10)])
    assert [r["seq"] for r in store.readings("g-1", since=T0 + 3, until=T0 + 6)] == [3, 4, 5, 6]
    assert [r["seq"] for r in store.readings("g-1", limit=3)] == [7, 8, 9]  # the newest, oldest first
    assert [r["seq"] for r in store.readings("g-1", since=T0 + 8.5)] == [9]


def test_a_resent_reading_is_stored_once(store):
    reading = Reading(T0, 5, {"depth_cm": 1.5})
    store.write_readings([("snow-1", reading), ("snow-1", reading)])
    store.write_readings([("snow-1", reading)])
    assert store.reading_count("snow-1") == 1
    assert store.readings("snow-1") == [{"ts": T0, "seq": 5, "v": {"depth_cm": 1.5}}]


def test_awkward_names_and_values_round_trip(store):
    device = 'city hall, 2F=west "printer" \'tray\' 東'
    values = {
        "depth cm": 1.0,
        "a,b=c": 2.5,
        'quote"d': True,
        "time": 3.0, "seq": 4.0, "device": "dev", "v.x": 5.0,  # reserved by InfluxDB or the schema
        "積雪_cm": 6.25,
        "text": 'say "hi", a=b \\ back\\slash \'single\' 日本',
        "empty": "",
        "trailing_backslash": "ends with \\",
    }
    store.write_readings([(device, Reading(T0, 9, values))])
    store.write_readings([("plain", Reading(T0, 1, {"depth cm": 2.0}))])
    assert store.readings(device) == [{"ts": T0, "seq": 9, "v": values}]
    assert store.readings("plain") == [{"ts": T0, "seq": 1, "v": {"depth cm": 2.0}}]
    assert store.reading_count(device) == 1


def test_line_protocol_escaping():
    assert line("a b,c=d", Reading(1.5, 7, {"x y": 1, "s": 'q"\\', "b": False})) == (
        'reading,device=a\\ b\\,c\\=d seq=7i,b=false,s="q\\"\\\\",x\\ y=1.0 1500000000')
    assert line("d", Reading(1.5, 1, {"nan": float("nan"), "none": None})) == "reading,device=d seq=1i 1500000000"
    with pytest.raises(ValueError, match="line break"):
        line("d", Reading(1.0, 1, {"a\nb": 1}))
    with pytest.raises(ValueError, match="backslash"):
        line("d\\", Reading(1.0, 1, {"a": 1}))


def test_bad_data_raises_and_says_what(store):
    store.write_readings([("m-1", Reading(T0, 1, {"x": 1.5}))])
    with pytest.raises(InfluxWriteError, match="HTTP 400.*conflict"):
        store.write_readings([("m-1", Reading(T0 + 1, 2, {"x": "text now"}))])
    assert store.spooled() == 0


def test_outage_spools_then_flushes_in_order(store, server, tmp_path):
    store.write_readings([("snow-1", Reading(T0, 1, {"depth_cm": 1.0}))])
    server.stop()
    # Nothing raises; every batch waits on disk. The same point written twice: the later must win.
    store.write_readings([("snow-1", Reading(T0 + 1, 2, {"depth_cm": 2.0}))])
    store.write_readings([("snow-1", Reading(T0 + 2, 3, {"depth_cm": 3.0})),
                          ("snow-1", Reading(T0 + 3, 4, {"depth_cm": 4.0}))])
    store.write_readings([("snow-1", Reading(T0 + 1, 2, {"depth_cm": 2.5}))])
    assert store.spooled() == 4
    assert store.flush_spool() == 0
    assert len(list((tmp_path / "spool").glob("*.lp"))) == 3
    server.start()
    store.write_readings([("snow-1", Reading(T0 + 4, 5, {"depth_cm": 5.0}))])
    assert store.spooled() == 0
    assert list((tmp_path / "spool").iterdir()) == []
    assert [(r["seq"], r["v"]["depth_cm"]) for r in store.readings("snow-1")] == [
        (1, 1.0), (2, 2.5), (3, 3.0), (4, 4.0), (5, 5.0)]


def test_a_new_store_flushes_what_an_earlier_one_left(server, tmp_path):
    server.stop()
    first = InfluxStore(server.url, tmp_path / "spool", timeout_s=1.0, retry_s=60.0)
    first.write_readings([("s-1", Reading(T0 + i, i, {"v_pct": float(i)})) for i in range(3)])
    first.write_readings([("s-1", Reading(T0 + 3, 3, {"v_pct": 3.0}))])  # within retry_s: straight to the spool
    assert first.spooled() == 4
    first.close()
    # Still down: the next process's first batch goes behind the old files, numbered after them.
    second = InfluxStore(server.url, tmp_path / "spool", timeout_s=1.0, retry_s=0.0)
    assert second.spooled() == 4
    second.write_readings([("s-1", Reading(T0 + 1, 1, {"v_pct": 1.5}))])  # overwrites seq 1, so must land last
    assert second.spooled() == 5
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [
        "000000000001-3.lp", "000000000002-1.lp", "000000000003-1.lp"]
    server.start()
    assert second.flush_spool() == 5
    assert second.spooled() == 0
    assert [(r["seq"], r["v"]["v_pct"]) for r in second.readings("s-1")] == [(0, 0.0), (1, 1.5), (2, 2.0), (3, 3.0)]
    second.close()


def test_user_password_auth(tmp_path):
    require(influxd_available(), "InfluxDB", "sudo apt-get install influxdb")
    with InfluxServer(tmp_path / "influxd", auth=True) as server:
        create = urllib.parse.urlencode({"q": "CREATE USER admin WITH PASSWORD 'p@ss:w/rd' WITH ALL PRIVILEGES"})
        urllib.request.urlopen(urllib.request.Request(f"{server.http_url}/query?{create}", method="POST"), timeout=5)
        url = f"influxdb://admin:{urllib.parse.quote('p@ss:w/rd', safe='')}@127.0.0.1:{server.port}/jisaku"
        store = InfluxStore(url, tmp_path / "spool", timeout_s=2.0, retry_s=0.0)
        store.write_readings([("a-1", Reading(T0, 1, {"x_c": 20.5}))])
        assert store.spooled() == 0
        assert store.readings("a-1") == [{"ts": T0, "seq": 1, "v": {"x_c": 20.5}}]
        assert query(server, "SELECT count(seq) FROM reading", ("admin", "p@ss:w/rd"))[0]["values"][0][1] == 1

        # Wrong credentials: kept in the spool (an operator can fix the password), not lost.
        wrong = InfluxStore(url.replace("admin:", "admin2:"), tmp_path / "spool2", timeout_s=2.0, retry_s=0.0)
        wrong.write_readings([("a-1", Reading(T0 + 1, 2, {"x_c": 21.0}))])
        assert wrong.spooled() == 1


def test_url_forms(tmp_path):
    token = InfluxStore("influxdb://my%2Ftoken@db.example:8086/jisaku", tmp_path / "a")
    assert (token.base_url, token.database) == ("http://db.example:8086", "jisaku")
    assert token._headers["Authorization"] == "Token my/token"
    tls = InfluxStore("influxdbs://u:p@db.example/proxy/influx/city", tmp_path / "b")
    assert (tls.base_url, tls.database) == ("https://db.example:8086/proxy/influx", "city")
    assert tls._headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    plain = InfluxStore("https://db.example/jisaku?rp=week", tmp_path / "c")
    assert (plain.base_url, plain.retention_policy, plain._headers) == ("https://db.example", "week", {})
    assert "p@" not in repr(tls) and "token" not in repr(token)
    with pytest.raises(ValueError, match="name the database"):
        InfluxStore("influxdb://db.example:8086", tmp_path / "d")
    with pytest.raises(ValueError, match="influxdb://"):
        InfluxStore("postgres://db.example/x", tmp_path / "e")
