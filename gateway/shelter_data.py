"""Shelters in the national open-data formats: read a town's shelter list, register each
shelter, and give the list back with how full each shelter is now.

Towns already publish their shelters as CSV in one of these formats (the column lists
below, in the order the formats give them):

- 指定緊急避難場所一覧: デジタル庁「自治体標準オープンデータセット」(formerly 推奨データセット),
  dataset "指定緊急避難場所一覧" as in the 正式版 data definition (項目定義書) in force
  in 2025: ID, 名称, 所在地, 緯度, 経度, 災害種別_洪水 … 災害種別_火山現象,
  指定避難所との重複, 想定収容人数, …
- 指定避難所: 国土地理院「指定緊急避難場所・指定避難所データ」, the national list of
  指定避難所 that the GSI publishes for every municipality (CSV, as downloaded in 2025):
  共通ID, 施設・場所名, 住所, 受入対象者, …
- 指定緊急避難場所 (国土地理院): the GSI's list of 指定緊急避難場所, the same shelters as
  the first format in the GSI's own columns.

(The デジタル庁 data definitions list 指定避難所 too, but its column list could not be
checked when this was written; a file in that layout is read by its shared columns only if
it has an ID, 名称, 緯度 and 経度. Add it to DATASETS once checked: nothing else changes.)

Reading (:func:`read_csv`) accepts UTF-8 with or without a BOM, and Shift_JIS (CP932), which
Excel in Japan writes. The format is told by the header. Columns the format does not name
are kept and exported again. A problem names the line and says what to fix.

Importing (:func:`import_shelters`) registers each row as a device of kind ``shelter``
through :class:`~jisaku.gateway.changes.Changes`, so every change is in the audit log. The
device id comes from the row's ID (``shelter-<id>``), so importing the same list again
updates the shelters instead of adding them twice. Each shelter's capacity (想定収容人数)
becomes its ``capacity`` setting: sent to its tally when there is a broker to send with,
otherwise recorded on the server ("pending") until there is.

Exporting (:func:`export_rows`, :func:`to_csv`, :func:`to_geojson`) writes the format's
columns, in the order and with the values the town imported, and then the live columns
(:data:`LIVE_COLUMNS`): open or closed, people inside, capacity, how full, last update.

Example::

    table = read_csv(Path("hinanbasho.csv").read_bytes())
    ids = import_shelters(changes, table, actor="cli:tanaka")      # ['shelter-1', 'shelter-2', ...]
    states = shelter_states(store, registry, public_only=True)
    Path("shelters.csv").write_bytes(to_csv(states))
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from jisaku.contract import protocol
from jisaku.kinds.shelter import occupancy
from jisaku.kinds.shelter.occupancy import LABELS

from .db import write
from .registry import DeviceRecord, Registry
from .store import SQLiteStore

KIND = "shelter"
ID_PREFIX = "shelter-"
JST = timezone(timedelta(hours=9), "JST")
MAX_CAPACITY = 100_000  # as kind.toml's limits for the capacity setting

# デジタル庁 自治体標準オープンデータセット「指定緊急避難場所一覧」, 正式版 (in force in 2025).
EMERGENCY_SITE_COLUMNS = (
    "全国地方公共団体コード", "ID", "名称", "名称_カナ", "名称_英字", "所在地_全国地方公共団体コード", "町字ID",
    "所在地_連結表記", "所在地_都道府県", "所在地_市区町村", "所在地_町字", "所在地_番地以下", "建物名等(方書)",
    "緯度", "経度", "標高", "電話番号", "内線番号", "連絡先メールアドレス", "連絡先FormURL",
    "連絡先備考（その他、SNSなど）", "郵便番号", "市区町村コード", "地方公共団体名",
    "災害種別_洪水", "災害種別_崖崩れ、土石流及び地滑り", "災害種別_高潮", "災害種別_地震", "災害種別_津波",
    "災害種別_大規模な火事", "災害種別_内水氾濫", "災害種別_火山現象",
    "指定避難所との重複", "想定収容人数", "対象となる町会・自治会", "URL", "画像", "画像_ライセンス", "備考",
)
# 国土地理院「指定緊急避難場所・指定避難所データ」, 指定避難所 (CSV as published in 2025).
SHELTER_COLUMNS = (
    "NO", "共通ID", "施設・場所名", "住所", "指定緊急避難場所との住所同一", "その他市町村長が必要と認める事項",
    "受入対象者", "緯度", "経度", "備考",
)
# 国土地理院「指定緊急避難場所・指定避難所データ」, 指定緊急避難場所 (CSV as published in 2025).
GSI_EMERGENCY_SITE_COLUMNS = (
    "NO", "共通ID", "施設・場所名", "住所", "洪水", "崖崩れ、土石流及び地滑り", "高潮", "地震", "津波",
    "大規模な火事", "内水氾濫", "火山現象", "指定避難所との住所同一", "緯度", "経度", "備考",
)

# What the export adds after the format's columns: the shelter as it is now.
LIVE_COLUMNS = ("開設状況", "避難者数", "収容可能人数", "混雑状況", "更新日時")
OPEN_WORDS = {True: "開設", False: "閉鎖"}
CAPACITY_COLUMN = "想定収容人数"  # used as the capacity when the file has it, whatever its format


@dataclass(frozen=True)
class Dataset:
    """One national format: its columns, and which of them jisaku needs."""

    key: str                          # used in URLs and in the CLI: ?dataset=emergency_sites
    name: str                         # 指定緊急避難場所一覧
    source: str                       # who defines it
    columns: tuple[str, ...]          # in the order the format gives them
    id_column: str                    # unique in the town: the device id comes from it
    name_column: str
    english_name_column: str | None = None
    lat_column: str = "緯度"
    lon_column: str = "経度"

    def required(self) -> tuple[str, ...]:
        """The columns jisaku cannot do without: which shelter, its name, where it is."""
        return (self.id_column, self.name_column, self.lat_column, self.lon_column)


EMERGENCY_SITES = Dataset("emergency_sites", "指定緊急避難場所一覧", "デジタル庁 自治体標準オープンデータセット",
                          EMERGENCY_SITE_COLUMNS, id_column="ID", name_column="名称",
                          english_name_column="名称_英字")
GSI_SHELTERS = Dataset("gsi_shelters", "指定避難所", "国土地理院 指定緊急避難場所・指定避難所データ",
                       SHELTER_COLUMNS, id_column="共通ID", name_column="施設・場所名")
GSI_EMERGENCY_SITES = Dataset("gsi_emergency_sites", "指定緊急避難場所", "国土地理院 指定緊急避難場所・指定避難所データ",
                              GSI_EMERGENCY_SITE_COLUMNS, id_column="共通ID", name_column="施設・場所名")
DATASETS = (EMERGENCY_SITES, GSI_SHELTERS, GSI_EMERGENCY_SITES)


class ShelterDataError(ValueError):
    """A shelter list that cannot be read as it is; the message says where and what to fix."""


# ---------------------------------------------------------------- reading


@dataclass
class ShelterRow:
    line: int                         # where the row starts in the file, counting the header as 1
    values: dict[str, str]            # every column, as written in the file
    device_id: str
    name: str                         # 名称 (Japanese)
    name_en: str                      # 名称_英字, or ""
    lat: float
    lon: float
    capacity: int | None              # 想定収容人数, None when the file does not say


@dataclass
class ShelterTable:
    dataset: Dataset
    columns: list[str]                # the header as in the file (an earlier export's live columns left out)
    rows: list[ShelterRow]
    encoding: str                     # "UTF-8", "UTF-8 (BOM)" or "Shift_JIS"


def decode(data: bytes) -> tuple[str, str]:
    """The file's text and its encoding: UTF-8 with or without a BOM, else Shift_JIS (CP932)."""
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8):].decode("utf-8"), "UTF-8 (BOM)"
        except UnicodeDecodeError as err:
            raise ShelterDataError(f"the file starts like UTF-8 but byte {err.start + 3} is not UTF-8:"
                                   " save it again as \"CSV UTF-8\"") from None
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        # CP932 is Shift_JIS as Windows and Excel write it (with ①, ㈱ and the like).
        return data.decode("cp932"), "Shift_JIS"
    except UnicodeDecodeError as err:
        raise ShelterDataError(f"the file is neither UTF-8 nor Shift_JIS (byte {err.start} cannot be read):"
                               " save it from Excel as \"CSV UTF-8 (comma delimited)\"") from None


def detect(header: list[str]) -> Dataset:
    """The format whose columns the header shares most; an error if it shares too few."""
    names = set(header)
    best = max(DATASETS, key=lambda dataset: len(names & set(dataset.columns)))
    if len(names & set(best.columns)) < 3:
        expected = "; ".join(f"{d.name} ({d.source}): {', '.join(d.required())}" for d in DATASETS)
        shown = ", ".join(header[:6]) + ("..." if len(header) > 6 else "")
        raise ShelterDataError(f"the first row (the header) is {shown},"
                               f" which is none of the shelter formats jisaku reads. It needs at least: {expected}")
    return best


def read_csv(data: bytes) -> ShelterTable:
    """A town's shelter list, checked: every row with an ID, a name and a position."""
    text, encoding = decode(data)
    # strict: a quote left open is an error here, instead of swallowing the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = []  # (first line, fields)
    line = 0
    try:
        for fields in reader:
            first, line = line + 1, reader.line_num
            if any(field.strip() for field in fields):
                records.append((first, fields))
    except csv.Error as err:
        if "end of data" in str(err):
            problem = "a value starts with a double quote \" that is never closed"
        else:
            problem = "a value in double quotes must end with the quote, right before the next comma"
        raise ShelterDataError(f"line {line + 1}: {problem} ({err})") from None
    if not records:
        raise ShelterDataError("the file is empty: the first row must name the columns (ID, 名称, 緯度, 経度, ...)")
    header_line, header = records[0]
    header = [name.strip() for name in header]
    while header and not header[-1]:  # trailing empty columns, as spreadsheets leave them
        header.pop()
    repeated = sorted(name for name, n in Counter(header).items() if n > 1)
    if repeated or "" in header:
        raise ShelterDataError(f"line {header_line}: every column in the header needs a name of its own"
                               + (f" ({', '.join(repeated)} appears twice)" if repeated else " (one is empty)"))
    dataset = detect(header)
    missing = [name for name in dataset.required() if name not in header]
    if missing:
        raise ShelterDataError(
            f"this looks like {dataset.name} ({dataset.source}), but it has no column {', '.join(missing)}."
            f" Add {'it' if len(missing) == 1 else 'them'} to the first row, spelled exactly so, and fill"
            f" {'it' if len(missing) == 1 else 'them'} in for every shelter: {dataset.id_column} (unique in the"
            f" town, so that importing again updates the shelter), {dataset.name_column} (its name), and"
            f" {dataset.lat_column} / {dataset.lon_column} (latitude and longitude in degrees, e.g. 36.1431 and"
            " 137.2465; 地理院地図 shows them for any point)")
    kept = [name for name in header if name not in LIVE_COLUMNS]  # our own columns, from an earlier export
    rows, lines_of = [], {}
    for position, (first, fields) in enumerate(records[1:]):
        if len(fields) > len(header) and any(value.strip() for value in fields[len(header):]):
            raise ShelterDataError(f"line {first}: {len(fields)} values, but the header names {len(header)}"
                                   " columns: a comma inside a value needs the value in double quotes")
        fields = fields[:len(header)] + [""] * (len(header) - len(fields))
        values = dict(zip(header, fields))
        row = _row(dataset, first, {name: values[name] for name in kept}, values)
        if row.device_id in lines_of:
            raise ShelterDataError(f"line {first}: {dataset.id_column} {values[dataset.id_column]!r} gives the"
                                   f" device id {row.device_id}, as line {lines_of[row.device_id]} does:"
                                   f" each shelter needs an {dataset.id_column} of its own")
        lines_of[row.device_id] = first
        rows.append(row)
    return ShelterTable(dataset, kept, rows, encoding)


def _row(dataset: Dataset, line: int, kept: dict[str, str], values: dict[str, str]) -> ShelterRow:
    name = values[dataset.name_column].strip()
    if not name:
        raise ShelterDataError(f"line {line}: {dataset.name_column} is empty: every shelter needs its name")
    english = values.get(dataset.english_name_column or "", "").strip()
    return ShelterRow(line=line, values=kept, device_id=device_id_for(values[dataset.id_column], dataset, line),
                      name=name, name_en=english,
                      lat=_degrees(values[dataset.lat_column], dataset.lat_column, 90, line),
                      lon=_degrees(values[dataset.lon_column], dataset.lon_column, 180, line),
                      capacity=_capacity(values.get(CAPACITY_COLUMN, ""), line))


def device_id_for(value: str, dataset: Dataset = EMERGENCY_SITES, line: int | None = None) -> str:
    """The device id for a shelter's ID: ``shelter-`` and the ID in lower case, other characters as ``-``.

    >>> device_id_for("CC0100022200"), device_id_for("避難所 12")
    ('shelter-cc0100022200', 'shelter-12')
    """
    where = f"line {line}: " if line is not None else ""
    text = unicodedata.normalize("NFKC", value).strip().lower()  # full-width Ａ１ becomes a1
    part = re.sub(r"[^a-z0-9._-]+", "-", text).strip("-")
    if not text:
        raise ShelterDataError(f"{where}{dataset.id_column} is empty: every shelter needs an ID, unique in the"
                               " town, so that importing the list again updates it instead of adding it twice")
    device_id = ID_PREFIX + part
    if not part or not protocol.DEVICE_ID.match(device_id):
        raise ShelterDataError(f"{where}{dataset.id_column} {value!r} makes no device id: use letters a-z, digits"
                               f" and . _ - (at most {64 - len(ID_PREFIX)} of them)")
    return device_id


def _decimal(text: str) -> float | None:
    """A number as written in a spreadsheet: full-width digits and thousands separators allowed."""
    text = unicodedata.normalize("NFKC", text).strip().replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _degrees(text: str, column: str, limit: float, line: int) -> float:
    number = _decimal(text)
    if number is None or not -limit <= number <= limit:
        other = "経度" if column == "緯度" else "緯度"
        hint = f"; is it swapped with {other}?" if number is not None else ""
        raise ShelterDataError(f"line {line}: {column} is {text!r}, but it must be a number of degrees from"
                               f" {-limit:g} to {limit:g} (e.g. {'36.1431' if limit == 90 else '137.2465'}){hint}")
    return number


def _capacity(text: str, line: int) -> int | None:
    if not text.strip():
        return None
    number = _decimal(unicodedata.normalize("NFKC", text).strip().removesuffix("人"))
    if number is None or not number.is_integer() or not 0 <= number <= MAX_CAPACITY:
        raise ShelterDataError(f"line {line}: {CAPACITY_COLUMN} is {text!r}: write a whole number of people"
                               f" from 0 to {MAX_CAPACITY:,}, or leave it empty when it is not known")
    return int(number)


# ---------------------------------------------------------------- importing


class ImportedIds(list):
    """The device ids of the imported shelters, in the file's order, and what happened to each."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[str] = []
        self.updated: list[str] = []
        self.unchanged: list[str] = []
        self.capacity_sent: list[str] = []      # a new capacity went to the tally (retained on the broker)
        self.capacity_recorded: list[str] = []  # kept on the server only: there was no broker to send with


def attributes_for(table: ShelterTable, row: ShelterRow, position: int) -> dict[str, Any]:
    """What the registry keeps of a row: enough to write it out again as it was imported."""
    # The registry stores attributes with sorted keys, so the column order is kept as a list.
    return {"dataset": table.dataset.key, "columns": list(table.columns), "row": dict(row.values),
            "position": position}


def import_shelters(changes, table: ShelterTable, actor: str) -> ImportedIds:
    """Register (or update) every shelter of ``table``; returns their device ids.

    All the shelters are written in one transaction with their audit entries: a problem
    halfway leaves the registry as it was. A shelter already registered keeps its secret
    and whether it is public; its name, position and row are updated. A new one gets a
    secret that is not shown: give its tally one with ``jisaku devices rotate <id>``.
    Capacities that differ from the server's go out afterwards (sending waits for the broker).
    """
    imported = ImportedIds()
    new_capacities = []
    with write(changes.db.connection):
        for position, row in enumerate(table.rows):
            before = changes.registry.get(row.device_id)
            if before is not None and before.kind != KIND:
                raise ShelterDataError(f"line {row.line}: {row.device_id} is already registered as a {before.kind},"
                                       f" not a shelter: change its {table.dataset.id_column}, or remove that device")
            record = DeviceRecord(
                id=row.device_id, kind=KIND, name=row.name_en or row.name, name_ja=row.name,
                public=before.public if before else True, interval_s=before.interval_s if before else None,
                lat=row.lat, lon=row.lon, attributes=attributes_for(table, row, position),
                town=before.town if before else None, practice=before.practice if before else False)
            if before is None:
                changes.add_device(actor, record)  # the secret is not kept: rotate gives the tally one
                imported.added.append(row.device_id)
            elif before == record:
                imported.unchanged.append(row.device_id)
            else:
                changes.update_device(actor, record)
                imported.updated.append(row.device_id)
            imported.append(row.device_id)
            if row.capacity is not None and configured(changes.store, row.device_id).get("capacity") != row.capacity:
                new_capacities.append((row.device_id, row.capacity))
    sending = changes.publisher is not None
    for device_id, capacity in new_capacities:
        if sending:
            try:
                changes.push_settings(actor, device_id, {"capacity": capacity})
                imported.capacity_sent.append(device_id)
                continue
            except RuntimeError:  # no broker, or it did not take it in time: keep it on the server instead
                sending = False
        record_settings(changes, actor, device_id, {"capacity": capacity})
        imported.capacity_recorded.append(device_id)
    return imported


def configured(store: SQLiteStore, device_id: str) -> dict[str, Any]:
    """The settings the server holds for a device: the newest revision, or the applied one if it was refused."""
    config = store.config_state(device_id)
    if config is None:
        return {}
    return config["applied"] if config["state"] == "refused" else config["settings"]


def record_settings(changes, actor: str, device_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Keep new settings on the server as a revision not yet sent, with its audit entry.

    For a device with no broker to send with (an import from the command line while the
    broker is off): the map and the export use them at once; the tally gets them with the
    next settings pushed to it (``jisaku devices configure``, the operator pages).
    """
    with write(changes.db.connection):
        before = configured(changes.store, device_id)
        config = changes.store.next_config(device_id, settings)
        after = {key: value for key, value in config.items() if key != "rev"}
        changes.audit.record(actor, "device.settings", device_id, {"settings": before},
                             {"rev": config["rev"], "settings": after, "sent": False})
    return config


# ---------------------------------------------------------------- the live state


@dataclass
class ShelterState:
    """One shelter as residents should see it now."""

    id: str
    name: str
    name_ja: str
    lat: float | None
    lon: float | None
    count: int | None                 # people inside, from the tally's newest reading; None before any
    capacity: int | None              # None when not known
    open: bool
    level: str                        # vacant | crowded | full | closed (kinds/shelter/occupancy.py)
    updated: float | None             # UTC epoch seconds of the newest reading; None before any
    attributes: dict[str, Any] = field(default_factory=dict)
    public: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _whole(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def _imported_capacity(attributes: dict[str, Any]) -> int | None:
    text = attributes.get("row", {}).get(CAPACITY_COLUMN, "")
    try:
        return _capacity(text, 0)
    except ShelterDataError:
        return None


def shelter_states(store: SQLiteStore, registry: Registry, public_only: bool = False) -> list[ShelterState]:
    """Every shelter with its count, capacity, open or closed, and level, ordered by id.

    The count is the tally's newest reading. Capacity and open are the operators' word, the
    settings the server holds for the shelter (even before its tally applied them), else
    what the tally last reported; a capacity then falls back to the imported 想定収容人数.
    A shelter nobody opened is closed.
    """
    latest = {row["id"]: row for row in store.latest(public_only=False)}
    states = []
    for device in registry.devices(public_only=public_only):
        if device.kind != KIND:
            continue
        row = latest.get(device.id) or {}
        values = row.get("values") or {}
        settings = configured(store, device.id)
        attributes = device.attributes or {}
        state = occupancy.now({key: _whole(values.get(key)) for key in ("count", "capacity", "open")
                               if _whole(values.get(key)) is not None},
                              {key: _whole(settings[key]) for key in ("capacity", "open") if key in settings},
                              _imported_capacity(attributes))
        count = state["count"]
        states.append(ShelterState(
            id=device.id, name=device.name, name_ja=device.name_ja, lat=device.lat, lon=device.lon,
            count=None if count is None else max(count, 0), capacity=state["capacity"] or None,
            open=bool(state["open"]), level=state["level"], updated=row.get("ts") if count is not None else None,
            attributes=attributes, public=device.public))
    return states


# ---------------------------------------------------------------- exporting


def dataset_named(key: str | None) -> Dataset | None:
    """The format with this key (``emergency_sites``, ``gsi_shelters``, ``gsi_emergency_sites``); None for None."""
    if key is None:
        return None
    for dataset in DATASETS:
        if dataset.key == key:
            return dataset
    raise ShelterDataError(f"no shelter format {key!r}: one of {', '.join(d.key for d in DATASETS)}")


def jst(ts: float | None) -> str:
    """ISO 8601 in Japan time, e.g. 2024-11-22T09:00:00+09:00; "" for None."""
    return "" if ts is None else datetime.fromtimestamp(ts, JST).isoformat(timespec="seconds")


def _ordered(states: list[ShelterState], first: Dataset) -> list[ShelterState]:
    """In the order they were imported: ``first``'s shelters, then each other format's, hand-registered ones last."""
    keys = [first.key] + [dataset.key for dataset in DATASETS if dataset is not first]

    def order(state: ShelterState) -> tuple:
        attributes = state.attributes or {}
        dataset = attributes.get("dataset")
        return (keys.index(dataset) if dataset in keys else len(keys), attributes.get("position", math.inf), state.id)

    return sorted(states, key=order)


def export_columns(states: list[ShelterState], dataset: Dataset) -> list[str]:
    """The format's columns as the town's file had them (extra columns too), then LIVE_COLUMNS."""
    columns: list[str] = []
    for state in states:
        if (state.attributes or {}).get("dataset") == dataset.key:
            columns += [name for name in state.attributes.get("columns", []) if name not in columns]
    if not columns:
        columns = list(dataset.columns)
    return [name for name in columns if name not in LIVE_COLUMNS] + list(LIVE_COLUMNS)


def _known_values(state: ShelterState, dataset: Dataset) -> dict[str, str]:
    """The format's key columns for a shelter registered by hand, from what the registry knows."""
    values = {dataset.id_column: state.id.removeprefix(ID_PREFIX), dataset.name_column: state.name_ja or state.name}
    if dataset.english_name_column and state.name_ja and state.name != state.name_ja:
        values[dataset.english_name_column] = state.name
    if state.lat is not None and state.lon is not None:
        values[dataset.lat_column], values[dataset.lon_column] = repr(state.lat), repr(state.lon)
    return values


def live_values(state: ShelterState) -> dict[str, str]:
    return {
        "開設状況": OPEN_WORDS[state.open],
        "避難者数": "" if state.count is None else str(state.count),
        "収容可能人数": "" if state.capacity is None else str(state.capacity),
        "混雑状況": LABELS[state.level]["ja"],
        "更新日時": jst(state.updated),
    }


def export_rows(states: list[ShelterState], dataset: Dataset | str | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and one row per shelter: the format's columns with the imported values, then the live ones.

    ``dataset`` is the format to write (a Dataset or its key); None: the one most of the
    shelters were imported from. A shelter from another format, or registered by hand,
    fills the columns it shares with it (a hand-registered one: ID, name and position).
    """
    columns, rows = _export(states, dataset)
    return columns, [row for _, row in rows]


def _export(states: list[ShelterState], dataset: Dataset | str | None) -> tuple[list[str], list[tuple]]:
    """The header, and each shelter (in the export's order) with its row."""
    if isinstance(dataset, str) or dataset is None:
        dataset = dataset_named(dataset) if dataset else _most_common(states)
    ordered = _ordered(states, dataset)
    columns = export_columns(ordered, dataset)
    rows = []
    for state in ordered:
        attributes = state.attributes or {}
        own = attributes.get("row") or {}
        if attributes.get("dataset") == dataset.key:
            values = dict(own)  # as the town wrote it
        else:  # another format, or registered by hand: the columns it shares with this one
            values = {**_known_values(state, dataset), **own}
        values.update(live_values(state))
        rows.append((state, [values.get(name, "") for name in columns]))
    return columns, rows


def _most_common(states: list[ShelterState]) -> Dataset:
    keys = Counter((state.attributes or {}).get("dataset") for state in states)
    found = [dataset for dataset in DATASETS if keys[dataset.key]]
    return max(found, key=lambda dataset: keys[dataset.key]) if found else EMERGENCY_SITES


def to_csv(states: list[ShelterState], dataset: Dataset | str | None = None) -> bytes:
    """The shelters as CSV bytes: UTF-8 with a BOM, CRLF line ends.

    The BOM is what makes Excel in Japan open a UTF-8 file correctly (without it, Excel
    reads it as Shift_JIS and the Japanese turns into mojibake); other programs skip it.
    """
    columns, rows = export_rows(states, dataset)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")


def to_geojson(states: list[ShelterState], dataset: Dataset | str | None = None) -> dict[str, Any]:
    """The shelters as a GeoJSON FeatureCollection: one Feature per shelter (``id`` = device id),
    its point [lon, lat], and as properties the same columns as the CSV."""
    columns, rows = _export(states, dataset)
    features = []
    for state, row in rows:
        geometry = ({"type": "Point", "coordinates": [state.lon, state.lat]}
                    if state.lat is not None and state.lon is not None else None)
        features.append({"type": "Feature", "id": state.id, "geometry": geometry,
                         "properties": dict(zip(columns, row))})
    return {"type": "FeatureCollection", "features": features}
