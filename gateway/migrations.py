"""The database's layout, as one ordered list of changes ("migrations").

SQLite keeps a number in each database file, ``PRAGMA user_version``: how many of
the steps below the file has had. ``db.connect`` gives a file the steps it lacks,
in order, all in one write transaction (see ``db.migrate``), so a town that
upgrades jisaku never runs anything by hand.

To change the layout, add a step at the end of MIGRATIONS with the next number.
Never edit a step that has been released: databases out there already had it.

Example::

    MIGRATIONS.append(Migration(2, "devices get a free-text note",
                                "ALTER TABLE devices ADD COLUMN note TEXT NOT NULL DEFAULT ''"))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

# Every table as jisaku had them when the list of migrations began (release 0.x): step 1.
# IF NOT EXISTS, so that a database made before then (user_version 0, the tables already
# there) keeps its rows; the columns it may lack are in COLUMNS_ADDED_BEFORE_MIGRATIONS.
BASELINE = """
-- Devices, readings and what the gateway keeps about them.
CREATE TABLE IF NOT EXISTS devices (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    name_ja     TEXT NOT NULL DEFAULT '',  -- the name in Japanese; '' = show `name` everywhere
    public      INTEGER NOT NULL DEFAULT 1,
    interval_s  REAL,
    lat         REAL,
    lon         REAL,
    secret_hash TEXT,            -- NULL once revoked: the device may not connect
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS service_accounts (
    username    TEXT PRIMARY KEY,    -- always starts with "_", which no device id can
    secret_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    seq       INTEGER NOT NULL,
    v         TEXT NOT NULL,         -- the reading's values as a JSON object
    received  REAL NOT NULL,
    PRIMARY KEY (device_id, ts, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    seq       INTEGER NOT NULL,
    event     TEXT NOT NULL,
    v         TEXT NOT NULL,
    received  REAL NOT NULL,
    PRIMARY KEY (device_id, ts, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT PRIMARY KEY,
    ts        REAL NOT NULL,         -- time of the newest reading
    v         TEXT NOT NULL,         -- newest value of every metric the device has sent
    updated   REAL NOT NULL          -- when this row last changed, for the live stream
);
CREATE INDEX IF NOT EXISTS latest_updated ON latest (updated);
CREATE TABLE IF NOT EXISTS device_status (
    device_id TEXT PRIMARY KEY,
    state     TEXT NOT NULL,
    since     REAL NOT NULL,
    info      TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS status_history (
    device_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    state     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_history_device ON status_history (device_id, ts);
CREATE TABLE IF NOT EXISTS device_config (
    device_id TEXT PRIMARY KEY,
    rev       INTEGER NOT NULL,      -- the newest revision pushed to the device
    settings  TEXT NOT NULL,         -- all of its settings, as a JSON object
    applied   TEXT NOT NULL DEFAULT '{}',  -- the settings of the newest revision it applied
    pushed    REAL NOT NULL,
    acked_rev INTEGER,               -- the newest revision the device answered
    ok        INTEGER,               -- whether it applied it
    reason    TEXT,                  -- why not, in the device's words
    acked     REAL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id        INTEGER PRIMARY KEY,
    received  REAL NOT NULL,
    topic     TEXT NOT NULL,
    payload   BLOB NOT NULL,         -- the first bytes only
    reason    TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_reason ON quarantine (reason);

-- One row that counts every change to devices or accounts (see Registry.version).
CREATE TABLE IF NOT EXISTS registry_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO registry_version (id, version) VALUES (1, 0);

-- Operator accounts (accounts.py).
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,          -- operator or admin
    password_hash TEXT NOT NULL,          -- argon2id, never the password
    disabled      INTEGER NOT NULL DEFAULT 0,
    created       REAL NOT NULL,
    changed       REAL NOT NULL           -- password or role last changed
);

-- The audit log (audit.py).
CREATE TABLE IF NOT EXISTS audit_log (
    id      INTEGER PRIMARY KEY,
    ts      REAL NOT NULL,
    actor   TEXT NOT NULL,    -- an operator's user name, or "cli:<unix user>"
    action  TEXT NOT NULL,    -- e.g. device.add, device.revoke, rule.update, user.add
    target  TEXT NOT NULL,    -- what it was done to: a device id, a rule id, a user name
    before  TEXT,             -- JSON, NULL when the thing did not exist
    after   TEXT              -- JSON, NULL when the thing is gone
);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);

-- Alert notifications waiting to go out (notify_outbox.py).
CREATE TABLE IF NOT EXISTS notify_outbox (
    id         INTEGER PRIMARY KEY,
    created    REAL NOT NULL,
    payload    TEXT NOT NULL,        -- the message, a JSON object
    fanned_out INTEGER NOT NULL DEFAULT 0  -- 1 once a delivery per channel has been made
);
CREATE INDEX IF NOT EXISTS notify_outbox_new ON notify_outbox (fanned_out);
CREATE TABLE IF NOT EXISTS notify_deliveries (
    id         INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL,
    channel    TEXT NOT NULL,        -- a channel's name, e.g. webhook-1, smtp, mqtt
    created    REAL NOT NULL,
    state      TEXT NOT NULL,        -- pending | sent | failed
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_try   REAL NOT NULL,
    last_error TEXT,
    done       REAL
);
CREATE INDEX IF NOT EXISTS notify_deliveries_pending ON notify_deliveries (state, channel, id);

-- Hourly figures of old readings (retention.py).
CREATE TABLE IF NOT EXISTS readings_hourly (
    device_id TEXT NOT NULL,
    hour      REAL NOT NULL,     -- start of the hour, UTC epoch seconds
    metric    TEXT NOT NULL,
    n         INTEGER NOT NULL,
    min       REAL NOT NULL,
    max       REAL NOT NULL,
    sum       REAL NOT NULL,
    PRIMARY KEY (device_id, hour, metric)
) WITHOUT ROWID;

-- Alert rules, alerts and their history (alert_book.py).
CREATE TABLE IF NOT EXISTS alert_rules (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL,
    device_id TEXT,                  -- the rule is for this device, or
    kind      TEXT,                  -- for every device of this kind
    enabled   INTEGER NOT NULL DEFAULT 1,
    condition TEXT NOT NULL,         -- JSON, see Rule.condition
    created   REAL NOT NULL,
    updated   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id              INTEGER PRIMARY KEY,
    rule_id         INTEGER NOT NULL,
    rule_name       TEXT NOT NULL,   -- kept, so history reads well after the rule is gone
    device_id       TEXT NOT NULL,
    state           TEXT NOT NULL,   -- raised | acknowledged | cleared
    message         TEXT NOT NULL,   -- why it was raised
    message_ja      TEXT NOT NULL DEFAULT '',  -- the same in Japanese (see alert_words.py)
    value           TEXT,            -- JSON: the value that raised it
    raised          REAL NOT NULL,
    acknowledged    REAL,
    acknowledged_by TEXT,
    cleared         REAL,
    cleared_message TEXT,
    cleared_message_ja TEXT
);
-- At most one open alert per rule and device.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (rule_id, device_id) WHERE state != 'cleared';
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised);
CREATE TABLE IF NOT EXISTS alert_history (
    id       INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL,
    ts       REAL NOT NULL,
    state    TEXT NOT NULL,          -- raised | acknowledged | cleared
    actor    TEXT,                   -- the operator, or NULL for the gateway
    message  TEXT NOT NULL,
    message_ja TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history (alert_id);
-- What judging one rule for one device remembers between readings (see _Track).
CREATE TABLE IF NOT EXISTS alert_tracks (
    rule_id         INTEGER NOT NULL,
    device_id       TEXT NOT NULL,
    pending_since   REAL,
    pending_message TEXT,            -- JSON: a wording (alert_words.py)
    pending_value   TEXT,            -- JSON
    last_ts         REAL NOT NULL,
    anchor_lat      REAL,
    anchor_lon      REAL,
    anchor_ts       REAL NOT NULL,
    PRIMARY KEY (rule_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL           -- rules_rev: +1 on every rule change, for the engine to reload
);

-- Operators' sessions and failed logins (dashboard/operator/auth.py).
CREATE TABLE IF NOT EXISTS operator_sessions (
    token_hash TEXT PRIMARY KEY,      -- SHA-256 of the cookie's value, never the value
    user       TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created    REAL NOT NULL,
    expires    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    ip    TEXT NOT NULL,
    name  TEXT NOT NULL,
    ts    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_ip ON login_failures (ip, ts);
"""

# Columns added to tables before there were migrations: a database made by an older
# jisaku may lack them, since CREATE TABLE IF NOT EXISTS leaves an existing table as it was.
COLUMNS_ADDED_BEFORE_MIGRATIONS = [
    ("devices", "name_ja", "TEXT NOT NULL DEFAULT ''"),
    ("alerts", "message_ja", "TEXT NOT NULL DEFAULT ''"),
    ("alerts", "cleared_message_ja", "TEXT"),
    ("alert_history", "message_ja", "TEXT NOT NULL DEFAULT ''"),
]


def statements(sql: str) -> list[str]:
    """The statements of an SQL script, one by one.

    ``executescript`` would do them all, but it commits first: a migration must stay
    inside the one transaction that also sets the version.
    """
    found, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        raise ValueError(f"unfinished SQL statement (a missing ';'?): {current.strip()[:80]!r}")
    return found


def baseline(connection: sqlite3.Connection) -> None:
    """Step 1: create what is missing of BASELINE, and add the columns an older table lacks."""
    for statement in statements(BASELINE):
        connection.execute(statement)
    for table, column, definition in COLUMNS_ADDED_BEFORE_MIGRATIONS:
        have = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


@dataclass(frozen=True)
class Migration:
    version: int                  # the file's user_version once this step is done
    description: str
    change: str | Callable[[sqlite3.Connection], None]  # SQL statements, or a function for more

    def apply(self, connection: sqlite3.Connection) -> None:
        if callable(self.change):
            self.change(connection)
        else:
            for statement in statements(self.change):
                connection.execute(statement)


# In order; each version one more than the last.
MIGRATIONS: list[Migration] = [
    Migration(1, "every table as of the first migration (keeps a database made before it)", baseline),
    Migration(2, "pictures (snow cameras) and the areas blacked out before one is public", """
CREATE TABLE pictures (
    device_id    TEXT NOT NULL,
    ts           REAL NOT NULL,          -- when it was taken, UTC epoch seconds
    seq          INTEGER NOT NULL,       -- the device's picture counter
    received     REAL NOT NULL,
    content_type TEXT NOT NULL,          -- of the original: image/jpeg or image/png
    bytes        INTEGER NOT NULL,       -- of the original
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    file         TEXT NOT NULL,          -- the original, relative to the pictures folder
    mask_rev     INTEGER NOT NULL,       -- the mask its public copy was made with
    PRIMARY KEY (device_id, ts, seq)
) WITHOUT ROWID;
CREATE INDEX pictures_by_time ON pictures (device_id, ts);
CREATE TABLE picture_masks (
    device_id TEXT PRIMARY KEY,
    rects     TEXT NOT NULL,             -- JSON [[x, y, w, h], ...], fractions of the picture's size
    rev       INTEGER NOT NULL,
    updated   REAL NOT NULL
);
-- The newest picture's public copy and thumbnail, for the map: {"ts", "url", "thumbnail"}.
ALTER TABLE latest ADD COLUMN picture TEXT;
"""),
    Migration(3, "what else is known about a device (a shelter's address and capacity), and the town's switches", """
-- A JSON object of what a kind keeps beyond the columns above: for a shelter, the columns
-- of the national shelter dataset it was imported from (see gateway/shelter_data.py).
ALTER TABLE devices ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
-- Town-wide switches that operators turn (e.g. "disaster_mode"): the value as JSON.
CREATE TABLE town_state (
    name    TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    updated REAL NOT NULL,
    actor   TEXT NOT NULL
);
"""),
    Migration(4, "commands to devices and their answers (switching outputs), and the outputs devices report", """
-- Every command sent on jisaku/<id>/cmd, and the device's answer on cmd/ack (commands.py).
CREATE TABLE commands (
    id          TEXT PRIMARY KEY,      -- "c-8f3a…": the device answers with it
    device_id   TEXT NOT NULL,
    do          TEXT NOT NULL,         -- what to do, e.g. switch
    args        TEXT NOT NULL,         -- JSON object, e.g. {"output": "heater", "on": true}
    source      TEXT NOT NULL,         -- operator | rule
    issued_by   TEXT NOT NULL,         -- an operator's name, or "rule:<rule name>"
    issued_at   REAL NOT NULL,
    expires_at  REAL NOT NULL,         -- a device refuses it after this (UTC epoch seconds)
    status      TEXT NOT NULL,         -- sent | done | refused | no_answer
    answered_at REAL,
    code        TEXT,                  -- why it was refused, as a word: expired, interlock, ...
    reason      TEXT,                  -- the same in the device's own words
    result      TEXT                   -- JSON: what the device said it did, e.g. every output's state
);
CREATE INDEX commands_by_device ON commands (device_id, issued_at);
CREATE INDEX commands_waiting ON commands (status, expires_at);
-- The outputs a device said it has (its status object's "outputs"), kept when it goes offline.
CREATE TABLE device_outputs (
    device_id TEXT PRIMARY KEY,
    outputs   TEXT NOT NULL,           -- JSON {"heater": {"name": "Road heater", "safe": "off", ...}, ...}
    updated   REAL NOT NULL
);
-- An alert rule may switch an output when its alert is raised and cleared (alert_rules.Action), as JSON.
ALTER TABLE alert_rules ADD COLUMN action TEXT;
-- What an alert rule's action last asked of an output (rule_actions.py): for the rate limit
-- and for sending again what a device missed while it was offline.
CREATE TABLE rule_actions (
    rule_id    INTEGER NOT NULL,
    device_id  TEXT NOT NULL,          -- the device whose output the rule switches
    output     TEXT NOT NULL,
    wanted     INTEGER NOT NULL,       -- what the rule wants now: 1 on, 0 off
    sent_on    INTEGER,                -- what it last sent (NULL: nothing yet)
    sent_at    REAL,                   -- when (for min_interval_min)
    command_id TEXT,                   -- the last command, to see its answer
    PRIMARY KEY (rule_id, device_id, output)
) WITHOUT ROWID;
"""),
    Migration(5, "updates from afar: rollouts, each device's progress, and what each device runs", """
-- An operator's decision to offer one bundle (kind, version) to some devices (updates.py).
CREATE TABLE rollouts (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,          -- the bundle's kind (or "jisaku": the package for Pis)
    version         TEXT NOT NULL,
    runs_on         TEXT NOT NULL,          -- board | pi
    bytes           INTEGER NOT NULL,       -- of the bundle file
    manifest_sha256 TEXT NOT NULL,          -- a board checks the manifest it downloads against this
    target          TEXT NOT NULL,          -- "kind" (every device of it) or "devices" (those named)
    first_wave      INTEGER NOT NULL,       -- how many go first (0: all at once)
    wait_min        REAL NOT NULL,          -- how long a device has to be back and running
    trial_s         INTEGER NOT NULL,       -- told to the device: its own deadline after switching
    state           TEXT NOT NULL,          -- running | done | stopped
    reason          TEXT,                   -- why it stopped
    created_by      TEXT NOT NULL,
    created_at      REAL NOT NULL,
    finished_at     REAL
);
-- One offer to one device, and how far it got. Its id is the offer id the device reports with.
CREATE TABLE device_updates (
    id          INTEGER PRIMARY KEY,
    rollout_id  INTEGER NOT NULL REFERENCES rollouts (id),
    device_id   TEXT NOT NULL,
    version     TEXT NOT NULL,
    wave        INTEGER NOT NULL,           -- 1: the first devices; 2: the rest, once those are back
    state       TEXT NOT NULL,              -- waiting | offered | downloading | verified | switched | running
                                            -- | rolled_back | refused | withdrawn
    reason      TEXT,                       -- refused or rolled back: the device's word for why
    detail      TEXT,                       -- the same in a sentence
    from_version TEXT,                      -- what it ran before switching
    offered_at  REAL,                       -- when the gateway published the offer (NULL: not yet)
    updated_at  REAL NOT NULL,
    cleared     INTEGER NOT NULL DEFAULT 0  -- the retained offer was removed from the broker
);
CREATE INDEX device_updates_by_device ON device_updates (device_id, id);
CREATE INDEX device_updates_by_rollout ON device_updates (rollout_id);
-- What each device last said it runs (its status object): kept when it goes offline.
CREATE TABLE device_software (
    device_id TEXT PRIMARY KEY,
    runs_on   TEXT,                         -- board | pi, when the device said
    version   TEXT,                         -- of its app or firmware bundle; NULL: as installed
    fw        TEXT,                         -- the jisaku runtime's version
    updated   REAL NOT NULL
);
"""),
    Migration(6, "several towns on one deployment, and a practice space for learners", """
-- The towns this deployment serves (towns.py). The first (lowest position) also answers the
-- paths without /t/<id>/, so a one-town deployment keeps its addresses. NULL settings fall back to
-- jisaku.toml: every one for the first town, the base map and the licence for the others.
CREATE TABLE towns (
    id                TEXT PRIMARY KEY,     -- the town's path: /t/<id>/, e.g. takayama
    name              TEXT NOT NULL DEFAULT '',  -- '' for the first town: jisaku.toml's `town`
    name_ja           TEXT NOT NULL DEFAULT '',
    lat               REAL,                 -- where its map opens before any device is on it
    lon               REAL,
    zoom              INTEGER,
    tiles             TEXT,
    tiles_attribution TEXT,
    licence           TEXT,
    notify            TEXT,                 -- its [notify] table as JSON: where its alerts go
    position          INTEGER NOT NULL,
    created           REAL NOT NULL
);
-- An existing database is the first town, with everything in it.
INSERT INTO towns (id, position, created) VALUES ('main', 0, CAST(strftime('%s', 'now') AS REAL));
ALTER TABLE devices ADD COLUMN town TEXT NOT NULL DEFAULT 'main';
-- A practice device goes through the whole pipeline but never reaches residents.
ALTER TABLE devices ADD COLUMN practice INTEGER NOT NULL DEFAULT 0;
CREATE INDEX devices_by_town ON devices (town, id);
-- NULL: a joint-body account, which sees and manages every town.
ALTER TABLE users ADD COLUMN town TEXT DEFAULT 'main';
-- A learner's own target for practice alerts, as one [notify] channel in JSON.
ALTER TABLE users ADD COLUMN notify TEXT;
ALTER TABLE alert_rules ADD COLUMN town TEXT NOT NULL DEFAULT 'main';
-- A practice rule notifies its owner's own target only, never the town's.
ALTER TABLE alert_rules ADD COLUMN practice INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alert_rules ADD COLUMN owner TEXT;
-- Whose entry it is: the town of what was changed; NULL: the deployment's (towns, joint accounts).
ALTER TABLE audit_log ADD COLUMN town TEXT;
UPDATE audit_log SET town = 'main';
ALTER TABLE rollouts ADD COLUMN town TEXT;
UPDATE rollouts SET town = 'main';
-- Part B (per-town disaster mode): each town has its own switches, so town_state is keyed by
-- (town, name); an existing database's switches are the first town's.
CREATE TABLE town_state_by_town (
    town    TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    updated REAL NOT NULL,
    actor   TEXT NOT NULL,
    PRIMARY KEY (town, name)
);
INSERT INTO town_state_by_town (town, name, value, updated, actor)
    SELECT 'main', name, value, updated, actor FROM town_state;
DROP TABLE town_state;
ALTER TABLE town_state_by_town RENAME TO town_state;
"""),
]
