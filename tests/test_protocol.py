"""The wire contract: every shared test vector, through the gateway's own sorting."""

from __future__ import annotations

import pytest

from jisaku.contract import protocol
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.service import Gateway
from jisaku.gateway.store import Batch, SQLiteStore

from .vector_cases import load_cases, payload_bytes

CASES = load_cases()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    db = Database(tmp_path_factory.mktemp("vectors") / "jisaku.db")
    registry = Registry(db)
    for device_id, kind in [("snow-1", "snow_gauge"), ("bus-1", "bus"), ("tray-1", "printer_tray")]:
        registry.add_device(DeviceRecord(device_id, kind))
    # Never started: only its checking and sorting are used here.
    return Gateway(SQLiteStore(db), registry, "mqtt://127.0.0.1:1", "_gateway", "unused")


def outcome(batch: Batch) -> dict:
    """What the gateway made of one message, in the vectors' own terms."""
    if batch.quarantined:
        return {"error": batch.quarantined[0].reason}
    if batch.events:
        event = batch.events[0][1]
        return {"event": {"ts": event.ts, "seq": event.seq, "name": event.name, "v": event.values}}
    if batch.statuses:
        status = batch.statuses[0][1]
        return {"status": {"state": status.state, "info": status.info}}
    return {"readings": [{"ts": r.ts, "seq": r.seq, "v": r.values} for _, r in batch.readings]}


@pytest.mark.parametrize("case", CASES, ids=[f"{c['file']}: {c['name']}" for c in CASES])
def test_vector(gateway, case):
    batch = Batch()
    gateway.sort_into(batch, case["topic"], payload_bytes(case), case["received_at"])
    assert outcome(batch) == case["expect"]


def test_vectors_cover_every_rejection_reason_the_module_raises():
    import inspect
    import re

    raised = set(re.findall(r'ProtocolError\(\s*"(\w+)"', inspect.getsource(protocol)))
    covered = {case["expect"]["error"] for case in CASES if "error" in case["expect"]}
    # too_many_readings has its own test below: its payload is too big for a vector file.
    assert raised - covered == {"too_many_readings"}


def test_unregistered_device_is_quarantined(gateway):
    batch = Batch()
    gateway.sort_into(batch, "jisaku/stranger/data", protocol.encode_reading(1, {"x": 1}, ts=1732300000), 1732300000)
    assert [q.reason for q in batch.quarantined] == ["unknown_device"]
    assert "jisaku devices add" in batch.quarantined[0].detail


def test_too_many_readings_in_one_message(gateway):
    readings = [protocol.reading_dict(i, {"x": i}, ts=1732300000 + i) for i in range(protocol.MAX_READINGS_PER_MESSAGE + 1)]
    batch = Batch()
    gateway.sort_into(batch, "jisaku/bus-1/data", protocol.encode_readings(readings), 1732400000)
    assert [q.reason for q in batch.quarantined] == ["too_many_readings"]


def test_what_a_device_encodes_the_gateway_decodes():
    payload = protocol.encode_reading(9, {"lat": 36.1, "lon": 137.2, "speed_kmh": 20.5}, ts=1732300000.123456)
    (reading,) = protocol.decode_readings(payload, received_at=1732300001)
    assert reading == protocol.Reading(1732300000.123, 9, {"lat": 36.1, "lon": 137.2, "speed_kmh": 20.5})
    assert reading.position == (36.1, 137.2)
    event = protocol.decode_event(protocol.encode_event(3, "tray_left", {"waited_s": 31}, ts=1732300000), 1732300001)
    assert (event.name, event.values, event.seq) == ("tray_left", {"waited_s": 31}, 3)
    assert protocol.decode_status(protocol.encode_status("online", {"fw": "1"})) == protocol.Status("online", {"fw": "1"})


def test_a_device_cannot_encode_what_the_gateway_would_refuse():
    with pytest.raises(ValueError):
        protocol.encode_reading(1, {"depth_cm": float("nan")}, ts=1732300000)
    with pytest.raises(protocol.ProtocolError):
        protocol.topic("Bus 1", "data")
