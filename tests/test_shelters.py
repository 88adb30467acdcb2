"""Shelters: a town's national-format shelter list in, the same list with the live state out.

The sample lists in tests/data are made up (a fictional part of Takayama): one in デジタル庁's
指定緊急避難場所一覧 format in UTF-8 with a column of the town's own, one in 国土地理院's
指定避難所 format saved as Shift_JIS, as Excel does. Imported through Changes (audited), the
export gives back every value as it was, with the live columns after them; the endpoints
answer from a real dashboard on a real broker and gateway with a simulated tally.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jisaku.cli import main
from jisaku.contract.protocol import Reading
from jisaku.contract.settings import Settings
from jisaku.dashboard.app import create_app
from jisaku.device.config import load_device_config
from jisaku.gateway import shelter_data
from jisaku.gateway.changes import Changes
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.shelter_data import (LIVE_COLUMNS, ShelterDataError, import_shelters, read_csv, shelter_states,
                                         to_csv, to_geojson)
from jisaku.gateway.store import Batch

from .town import KINDS, wait_until

DATA = Path(__file__).parent / "data"
EMERGENCY = DATA / "shelters_emergency_sites.csv"      # UTF-8, デジタル庁 指定緊急避難場所一覧
GSI_SJIS = DATA / "shelters_gsi_sjis.csv"              # Shift_JIS, 国土地理院 指定避難所
T0 = 1732233600.0                                       # 2024-11-22 00:00 UTC, 09:00 in Japan


def rows_of(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV in any of the encodings the import takes."""
    text, _ = shelter_data.decode(data)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return list(reader.fieldnames), list(reader)


def replace_in(data: bytes, old: str, new: str) -> bytes:
    text = data.decode("utf-8")
    assert old in text
    return text.replace(old, new, 1).encode("utf-8")


@pytest.fixture
def changes(tmp_path):
    return Changes(Database(tmp_path / "jisaku.db"))


class RecordingPublisher:
    """A ConfigPublisher without the broker: records the revision as the real one does, and what it sent."""

    def __init__(self):
        self.sent = []

    def push(self, store, registry, device_id, changes):
        self.sent.append((device_id, changes))
        return store.next_config(device_id, changes)


# ---------------------------------------------------------------- reading


def test_the_format_and_the_encoding_are_told_by_the_file():
    table = read_csv(EMERGENCY.read_bytes())
    assert (table.dataset.key, table.encoding) == ("emergency_sites", "UTF-8")
    assert [row.device_id for row in table.rows] == ["shelter-1", "shelter-2", "shelter-3", "shelter-4"]
    first = table.rows[0]
    assert (first.name, first.name_en, first.lat, first.lon, first.capacity) == (
        "西小学校体育館", "Nishi Elementary School Gym", 36.1431, 137.2465, 40)
    assert table.columns[-1] == "ペット同行避難" and first.values["ペット同行避難"] == "可", "the town's own column is kept"
    assert table.rows[2].capacity is None, "想定収容人数 left empty: not known"

    with_bom = read_csv(codecs.BOM_UTF8 + EMERGENCY.read_bytes())
    assert with_bom.encoding == "UTF-8 (BOM)" and with_bom.rows == table.rows

    sjis = read_csv(GSI_SJIS.read_bytes())
    assert (sjis.dataset.key, sjis.encoding) == ("gsi_shelters", "Shift_JIS")
    assert sjis.rows[1].values["備考"] == "髙橋記念館の隣" and sjis.rows[2].values["備考"] == "①大ホール ②展示室"
    assert [row.capacity for row in sjis.rows] == [250, 30, None], "想定収容人数 used in any format that has it"


def test_a_missing_column_names_it_and_says_what_to_do():
    data = replace_in(EMERGENCY.read_bytes(), ",緯度,", ",緯度（世界測地系）,")
    with pytest.raises(ShelterDataError) as caught:
        read_csv(data)
    message = str(caught.value)
    assert "指定緊急避難場所一覧" in message and "no column 緯度" in message
    assert "Add it to the first row, spelled exactly so" in message and "latitude and longitude" in message


def test_a_bad_latitude_is_an_error_with_its_line():
    data = replace_in(EMERGENCY.read_bytes(), "36.14480", "北緯36度")
    with pytest.raises(ShelterDataError, match=r"line 3: 緯度 is '北緯36度', but it must be a number of degrees"):
        read_csv(data)
    swapped = replace_in(EMERGENCY.read_bytes(), "36.14310,137.24650", "137.24650,36.14310")
    with pytest.raises(ShelterDataError, match=r"line 2: 緯度 is '137.24650'.*swapped with 経度"):
        read_csv(swapped)


@pytest.mark.parametrize(("change", "says"), [
    (("\r\n212032,2,", "\r\n212032,1,"), r"line 3: ID '1' gives the device id shelter-1, as line 2 does"),
    (("\r\n212032,2,", "\r\n212032,,"), r"line 3: ID is empty: every shelter needs an ID"),
    ((",120,", ",百二十,"), r"line 3: 想定収容人数 is '百二十': write a whole number of people"),
    (("東町グラウンド", '"東町, グラウンド'), r"quote"),
])
def test_other_mistakes_name_the_line_and_the_fix(change, says):
    with pytest.raises(ShelterDataError, match=says):
        read_csv(replace_in(EMERGENCY.read_bytes(), *change))


def test_a_file_in_no_known_format_says_what_is_expected():
    with pytest.raises(ShelterDataError, match=r"none of the shelter formats.*ID, 名称, 緯度, 経度.*共通ID, 施設・場所名"):
        read_csv("番号,施設,住所\n1,a,b\n".encode())
    with pytest.raises(ShelterDataError, match="neither UTF-8 nor Shift_JIS"):
        read_csv(b"ID,\x82")


def test_ids_become_device_ids():
    assert shelter_data.device_id_for("CC0100022200") == "shelter-cc0100022200"
    assert shelter_data.device_id_for("Ａ－１２") == "shelter-a-12"
    with pytest.raises(ShelterDataError, match="makes no device id"):
        shelter_data.device_id_for("避難所")


# ---------------------------------------------------------------- import and export


@pytest.mark.parametrize("sample", [EMERGENCY, GSI_SJIS])
def test_an_imported_list_round_trips_through_the_export(changes, sample):
    original = sample.read_bytes()
    ids = import_shelters(changes, read_csv(original), actor="tanaka")
    assert ids == ids.added and len(ids) == len(read_csv(original).rows)

    exported = to_csv(shelter_states(changes.store, changes.registry))
    assert exported.startswith(codecs.BOM_UTF8), "UTF-8 with a BOM, for Excel"
    header, rows = rows_of(exported)
    in_header, in_rows = rows_of(original)
    assert header == in_header + list(LIVE_COLUMNS), "the national columns in the imported order, then the live ones"
    assert len(rows) == len(in_rows)
    for before, after in zip(in_rows, rows):
        assert {column: after[column] for column in in_header} == before
        assert after["開設状況"] == "閉鎖" and after["避難者数"] == "" and after["更新日時"] == ""
    capacities = [row.get("想定収容人数", "") for row in in_rows]
    assert [row["収容可能人数"] for row in rows] == capacities

    # And the export, imported again, changes nothing and exports the same.
    again = import_shelters(changes, read_csv(exported), actor="tanaka")
    assert again == again.unchanged
    assert to_csv(shelter_states(changes.store, changes.registry)) == exported


def test_importing_again_updates_instead_of_adding_and_is_audited(changes):
    import_shelters(changes, read_csv(EMERGENCY.read_bytes()), actor="tanaka")
    assert len(changes.registry.devices()) == 4
    entries = changes.audit.entries(limit=100)
    assert [e["action"] for e in entries].count("device.add") == 4 and {e["actor"] for e in entries} == {"tanaka"}

    renamed = replace_in(EMERGENCY.read_bytes(), "中央公民館,チュウオウ", "中央コミュニティセンター,チュウオウ")
    again = import_shelters(changes, read_csv(renamed), actor="suzuki")
    assert again.updated == ["shelter-2"] and sorted(again.unchanged) == ["shelter-1", "shelter-3", "shelter-4"]
    assert len(changes.registry.devices()) == 4
    assert changes.registry.get("shelter-2").name_ja == "中央コミュニティセンター"
    newest = changes.audit.entries(limit=1)[0]
    assert (newest["actor"], newest["action"], newest["target"]) == ("suzuki", "device.update", "shelter-2")
    assert newest["after"]["name_ja"] == "中央コミュニティセンター"


def test_a_device_of_another_kind_with_the_same_id_is_not_overwritten(changes):
    changes.add_device("tanaka", DeviceRecord("shelter-3", "snow_gauge", name="a snow gauge"))
    with pytest.raises(ShelterDataError, match="line 4: shelter-3 is already registered as a snow_gauge"):
        import_shelters(changes, read_csv(EMERGENCY.read_bytes()), actor="tanaka")
    assert changes.registry.get("shelter-1") is None, "all the shelters, or none"


def test_the_capacity_becomes_the_setting_the_server_knows_before_the_tally_connects(changes):
    ids = import_shelters(changes, read_csv(EMERGENCY.read_bytes()), actor="tanaka")
    assert ids.capacity_recorded == ["shelter-1", "shelter-2", "shelter-4"] and ids.capacity_sent == []
    config = changes.store.config_state("shelter-1")
    assert (config["settings"], config["state"]) == ({"capacity": 40}, "pending")
    entry = next(e for e in changes.audit.entries() if e["action"] == "device.settings" and e["target"] == "shelter-1")
    assert entry["after"] == {"rev": 1, "settings": {"capacity": 40}, "sent": False}

    # With a broker to send with, a changed capacity goes through Changes.push_settings.
    changes.publisher = RecordingPublisher()
    again = import_shelters(changes, read_csv(replace_in(EMERGENCY.read_bytes(), ",120,", ",150,")), actor="tanaka")
    assert again.capacity_sent == ["shelter-2"] and changes.publisher.sent == [("shelter-2", {"capacity": 150})]
    assert changes.store.config_state("shelter-2")["settings"]["capacity"] == 150


def test_shelter_states_join_the_tally_and_the_operators_word(changes):
    import_shelters(changes, read_csv(EMERGENCY.read_bytes()), actor="tanaka")
    changes.publisher = RecordingPublisher()
    changes.push_settings("tanaka", "shelter-1", {"open": 1})
    changes.store.write(Batch(readings=[("shelter-1", Reading(T0, 7, {"count": 35, "capacity": 40, "open": 1})),
                                        ("shelter-4", Reading(T0, 3, {"count": 12, "capacity": 300, "open": 0}))]))
    states = {state.id: state for state in shelter_states(changes.store, changes.registry)}
    one = states["shelter-1"]
    assert (one.count, one.capacity, one.open, one.level, one.updated) == (35, 40, True, "crowded", T0)
    assert states["shelter-4"].level == "closed", "the tally says closed and nobody opened it"
    three = states["shelter-3"]
    assert (three.count, three.capacity, three.level) == (None, None, "closed")

    header, rows = rows_of(to_csv(list(states.values())))
    first = rows[0]
    assert (first["開設状況"], first["避難者数"], first["収容可能人数"], first["混雑状況"], first["更新日時"]) == (
        "開設", "35", "40", "混雑", "2024-11-22T09:00:00+09:00")

    changes.push_settings("tanaka", "shelter-1", {"open": 0})  # closed from the office, before the tally hears it
    closed = next(s for s in shelter_states(changes.store, changes.registry) if s.id == "shelter-1")
    assert (closed.open, closed.level, closed.capacity) == (False, "closed", 40)

    collection = to_geojson(list(states.values()))
    feature = collection["features"][0]
    assert feature["id"] == "shelter-1" and feature["geometry"] == {"type": "Point", "coordinates": [137.2465, 36.1431]}
    assert list(feature["properties"]) == header and feature["properties"]["名称"] == "西小学校体育館"


def test_formats_mixed_and_shelters_registered_by_hand_fill_the_columns_they_share(changes):
    import_shelters(changes, read_csv(EMERGENCY.read_bytes()), actor="tanaka")
    import_shelters(changes, read_csv(GSI_SJIS.read_bytes()), actor="tanaka")
    changes.add_device("tanaka", DeviceRecord("gym-9", "shelter", name="Gym 9", name_ja="第九体育館", lat=36.1, lon=137.2))
    states = shelter_states(changes.store, changes.registry)
    header, rows = rows_of(to_csv(states))  # the format most came from: 指定緊急避難場所一覧
    assert header[:3] == ["全国地方公共団体コード", "ID", "名称"] and len(rows) == 8
    gsi, by_hand = rows[4], rows[7]
    assert (gsi["名称"], gsi["緯度"], gsi["経度"]) == ("南小学校体育館", "36.13650", "137.25010")
    assert (by_hand["ID"], by_hand["名称"], by_hand["名称_英字"], by_hand["緯度"]) == ("gym-9", "第九体育館", "Gym 9", "36.1")
    header, rows = rows_of(to_csv(states, "gsi_shelters"))
    assert header[:3] == ["NO", "共通ID", "施設・場所名"] and rows[0]["共通ID"] == "S2120320000101"


# ---------------------------------------------------------------- the endpoints and the command


@pytest.fixture
def client(tmp_path, changes):
    import_shelters(changes, read_csv(EMERGENCY.read_bytes()), actor="tanaka")
    hidden = changes.registry.get("shelter-3")
    hidden.public = False
    changes.update_device("tanaka", hidden)
    app = create_app(tmp_path / "jisaku.db")
    app.state.settings = Settings(data=str(tmp_path), town="Takayama City / 高山市")
    with TestClient(app) as client:
        yield client


def test_the_endpoints_give_only_public_shelters_with_the_licence(client):
    answer = client.get("/api/v1/shelters.csv")
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert '<https://creativecommons.org/licenses/by/4.0/>; rel="license"' in answer.headers["link"]
    header, rows = rows_of(answer.content)
    assert [row["ID"] for row in rows] == ["1", "2", "4"], "a private shelter is not in the open data"

    collection = client.get("/api/v1/shelters.geojson").json()
    assert collection["license"]["attribution"] == "Takayama City / 高山市"
    assert [f["id"] for f in collection["features"]] == ["shelter-1", "shelter-2", "shelter-4"]
    assert list(collection["features"][1]["properties"]) == header

    assert client.get("/api/v1/shelters.csv?dataset=nope").status_code == 400
    listing = client.get("/api/v1/open-data.json").json()["shelters"]
    assert (listing["csv"], listing["geojson"]) == ("/api/v1/shelters.csv", "/api/v1/shelters.geojson")
    assert listing["count"] == 3
    assert set(listing["live_columns"]) == set(LIVE_COLUMNS)


def test_the_command_imports_and_exports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    main(["shelters", "import", str(GSI_SJIS), "--actor", "tanaka", "--no-send"])
    out = capsys.readouterr().out
    assert "3 shelters, 指定避難所 (国土地理院" in out and "Shift_JIS" in out and "added 3, updated 0, unchanged 0" in out
    main(["shelters", "import", str(GSI_SJIS), "--no-send"])
    assert "added 0, updated 0, unchanged 3" in capsys.readouterr().out
    main(["shelters", "export", "-o", str(tmp_path / "out.csv")])
    header, rows = rows_of((tmp_path / "out.csv").read_bytes())
    assert [row["施設・場所名"] for row in rows] == ["南小学校体育館", "福祉センターひだまり", "市民文化会館"]
    main(["shelters", "export", "--format", "geojson"])
    assert len(json.loads(capsys.readouterr().out)["features"]) == 3

    broken = tmp_path / "broken.csv"
    broken.write_bytes(replace_in(EMERGENCY.read_bytes(), "36.14480", "abc"))
    with pytest.raises(SystemExit) as caught:
        main(["shelters", "import", str(broken), "--no-send"])
    assert "line 3: 緯度 is 'abc'" in str(caught.value)


class GatewayPublisher:
    """Sends settings on the test town's gateway connection, as the dashboard's publisher would."""

    def __init__(self, town):
        self.town = town

    def push(self, store, registry, device_id, changes):
        return self.town.gateway.push_config(device_id, changes)


def test_a_simulated_tally_reaches_the_shelter_export_of_a_real_dashboard(make_town):
    """The tally's count goes through the real broker and gateway into /api/v1/shelters.csv; the
    imported capacity and the operators' closing reach the tally as its config."""
    tally = load_device_config(KINDS / "shelter")
    town = make_town([tally])
    changes = Changes(Database(town.db_path), publisher=GatewayPublisher(town))
    imported = import_shelters(changes, read_csv(EMERGENCY.read_bytes()), actor="tanaka")
    assert "shelter-1" in imported.updated and "shelter-1" in imported.capacity_sent  # the tally was registered first
    town.run_devices()
    base = town.start_dashboard(tiles="osm")

    def export() -> dict[str, dict[str, str]]:
        with urllib.request.urlopen(base + "/api/v1/shelters.csv", timeout=10) as answer:
            return {row["ID"]: row for row in rows_of(answer.read())[1]}

    row = wait_until(lambda: (r := export()["1"])["避難者数"] not in ("", "0") and r, 30,
                     "people counted at the tally show in the export")
    assert (row["名称"], row["開設状況"], row["収容可能人数"]) == ("西小学校体育館", "開設", "40")
    assert row["更新日時"].endswith("+09:00")
    wait_until(lambda: changes.store.config_state("shelter-1")["state"] == "applied", 20,
               "the tally applies the imported capacity")

    changes.push_settings("tanaka", "shelter-1", {"open": 0})
    assert export()["1"]["混雑状況"] == "閉鎖", "closed on the map at once, before the tally answers"
    wait_until(lambda: changes.store.config_state("shelter-1")["state"] == "applied", 20, "the tally applies it")
    wait_until(lambda: [r for r in changes.store.latest() if r["id"] == "shelter-1"][0]["values"]["open"] == 0, 20,
               "the tally reports itself closed")
