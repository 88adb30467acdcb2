"""Every change to devices, their settings, accounts and alert rules, each with its audit entry.

The operator pages, the operator API and the ``jisaku`` command all change things
through here, so each change is checked the same way (a setting within its limits,
a device that exists) and leaves the same entry in the audit log: who (an
operator's name, or ``cli:<unix user>``), what, before and after. Where it can, the
change and its entry are written in one transaction: both are kept, or neither.
Secrets are never recorded.

Example::

    changes = Changes(Database(Path("data/jisaku.db")), publisher=config_publisher)
    secret = changes.add_device("tanaka", DeviceRecord("snow-5", "snow_gauge"))
    changes.push_settings(cli_actor(), "tray-1", {"left_after_s": 45})
    changes.update_user("tanaka", "suzuki", role="admin")
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any, Protocol

from jisaku.contract import kinds
from jisaku.contract.schedules import ScheduleError, check_schedule

from .accounts import AccountError, Accounts
from .alert_rules import Rule, RuleError
from .alerts import AlertBook, AlertNotFound
from .audit import AuditLog
from .commands import COMMAND_EXPIRY_S, Command, CommandBook, known_outputs
from .db import Database, write
from .pictures import PictureStore
from .registry import DeviceRecord, Registry, RegistryError
from .store import SQLiteStore
from .town_state import DISASTER_MODE, TownState
from .notify_config import NotifyConfig
from .towns import Town, TownError, Towns


class OperationError(ValueError):
    """A change that cannot be made as asked; the message says what to do instead."""


class NotFound(LookupError):
    pass


class PublisherMissing(RuntimeError):
    """There is no broker connection to send settings with."""


class ConfigPublisher(Protocol):
    """What sends a device its settings: the dashboard's ConfigPublisher, or the command line's own."""

    def push(self, store: SQLiteStore, registry: Registry, device_id: str, changes: dict[str, Any]) -> dict: ...

    def send_command(self, book: CommandBook, command: Command) -> Command: ...


def setting_limits(kind: str) -> dict[str, tuple[float, float]]:
    """The settings a device of ``kind`` takes from afar, with their limits (its kind folder's [settings])."""
    return kinds.limits_for(kind)


def check_settings(kind: str, changes: dict[str, Any],
                   outputs: set[str] | None = None) -> dict[str, float | int | list[dict[str, str]]]:
    """The changes as the device gets them, or :class:`OperationError` naming each one to fix.

    Numbers must be within their limits; a schedule (a list of entries, or lines like
    ``heater 05:00-08:00 mon-fri``) must read as contract/schedules.py says, naming only
    ``outputs`` when they are known.
    """
    settings = kinds.settings_for(kind)
    if not settings:
        raise OperationError(f"a {kind} device has no settings that can be changed from here")
    if not changes:
        raise OperationError("nothing to change: give at least one setting")
    clean, problems = {}, []
    for name, value in changes.items():
        if name not in settings:
            problems.append(f"unknown setting {name!r} (a {kind} takes {', '.join(sorted(settings))})")
            continue
        if settings[name].type == "schedule":
            try:
                clean[name] = check_schedule(value, outputs)
            except ScheduleError as err:
                problems.append(f"{name}: {err}")
            continue
        low, high = settings[name].low, settings[name].high
        number = _number(value)
        if number is None or not low <= number <= high:
            problems.append(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
            continue
        clean[name] = int(number) if float(number).is_integer() else number
    if problems:
        raise OperationError("; ".join(problems))
    return clean


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class Changes:
    """``publisher`` sends settings to devices (None: push_settings says so). ``alerts`` is an
    AlertBook, or the gateway's AlertEngine in the same process (it then reloads the rules at once)."""

    def __init__(self, db: Database, publisher: ConfigPublisher | None = None, alerts: Any = None):
        self.db = db
        self.registry = Registry(db)
        self.accounts = Accounts(db)
        self.audit = AuditLog(db)
        self.store = SQLiteStore(db)
        self.publisher = publisher
        self.alerts = alerts if alerts is not None else AlertBook(db)
        self.commands = CommandBook(db)

    # ------------------------------------------------------------ towns
    # ``within`` below is the town of the account making the change: None for a joint-body
    # account (or the command line), which may name any town. Another town's device or rule
    # is refused with the very words of one that does not exist, so nobody learns it is there.

    def town_for(self, within: str | None, asked: str | None) -> str:
        """The town a new device, rule or account goes to.

            town_for("kita", None)       # "kita": a town's operator adds to their own town
            town_for(None, "minami")     # "minami": a joint-body account names it
            town_for(None, None)         # the first town
            town_for("kita", "minami")   # OperationError: no town 'minami' (as if there were none)
        """
        towns = Towns(self.db)
        if asked in (None, ""):
            return within if within is not None else towns.first()
        if within is not None and asked != within:
            raise OperationError(f"no town {asked!r}; `jisaku towns list` shows them")
        try:
            return towns.must_exist(asked).id
        except TownError as err:
            raise OperationError(str(err)) from None

    def visible_device(self, device_id: str, within: str | None) -> DeviceRecord | None:
        """The device if it is there for an account of ``within`` (None: every town)."""
        device = self.registry.get(device_id)
        if device is None or (within is not None and device.town != within):
            return None
        return device

    def _together(self):
        """The change and its audit entry are kept together, or neither is."""
        return write(self.db.connection)

    # ------------------------------------------------------------ devices

    def add_device(self, actor: str, device: DeviceRecord, within: str | None = None) -> str:
        """Register the device in ``device.town`` (None: the account's own town, else the first);
        returns its secret (show it once)."""
        device = replace(device, town=self.town_for(within, device.town))
        with self._together():
            try:
                secret = self.registry.add_device(device)
            except RegistryError as err:
                raise OperationError(str(err)) from None
            self.audit.record(actor, "device.add", device.id, None, asdict(device))
        return secret

    def update_device(self, actor: str, device: DeviceRecord) -> None:
        with self._together():
            before = self.must_exist(device.id)
            if device.attributes is None:  # not given (the operator pages' form): they stay as they are
                device = replace(device, attributes=before.attributes)
            device = replace(device, town=before.town)  # a device moves town only by `jisaku towns set --id`
            if before == device:
                return
            if device.practice != before.practice:
                if not device.practice:  # the one way out of the practice space is promotion, audited as such
                    raise OperationError(f"{device.id} is a practice device: promote it to make it a town device"
                                         f" (POST /api/v1/operator/devices/{device.id}/promote, or"
                                         f" jisaku devices promote {device.id})")
                self.registry.set_practice(device.id, True)
            self.registry.update_device(device)
            old, new = asdict(before), asdict(device)
            changed = [key for key in new if old[key] != new[key]]
            self.audit.record(actor, "device.update", device.id,
                              {key: old[key] for key in changed}, {key: new[key] for key in changed})

    def rotate_secret(self, actor: str, device_id: str) -> str:
        """A new secret for the device (show it once); the old one stops working."""
        with self._together():
            self.must_exist(device_id)
            revoked = self.registry.is_revoked(device_id)
            secret = self.registry.rotate_secret(device_id)
            # That it happened, never the secret itself.
            self.audit.record(actor, "device.rotate_secret", device_id, {"revoked": revoked}, {"revoked": False})
        return secret

    def revoke(self, actor: str, device_id: str) -> None:
        """No secret works for the device any more; a revoked device is left as it is."""
        with self._together():
            self.must_exist(device_id)
            if self.registry.is_revoked(device_id):
                return
            self.registry.revoke(device_id)
            self.audit.record(actor, "device.revoke", device_id, {"revoked": False}, {"revoked": True})

    def remove_device(self, actor: str, device_id: str) -> None:
        """Forget the device; its stored readings stay."""
        with self._together():
            device = self.must_exist(device_id)
            self.registry.remove_device(device_id)
            self.audit.record(actor, "device.remove", device_id, asdict(device), None)

    def push_settings(self, actor: str, device_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Send the device new settings (checked against its limits first); returns the revision.

        Not one transaction with its audit entry: sending waits for the broker, and the
        gateway must go on writing meanwhile. The entry is written once the broker has it.
        """
        device = self.must_exist(device_id)
        # A schedule may name only the outputs the device said it has (when it has said).
        clean = check_settings(device.kind, changes, set(known_outputs(self.db, device_id)) or None)
        if self.publisher is None:
            raise PublisherMissing("this dashboard has no broker account to send settings with:"
                                   " start it with `jisaku dashboard` or `jisaku demo`")
        before = (self.store.config_state(device_id) or {}).get("settings", {})
        config = self.publisher.push(self.store, self.registry, device_id, clean)
        after = {key: value for key, value in config.items() if key != "rev"}
        self.audit.record(actor, "device.settings", device_id,
                          {"settings": before}, {"rev": config["rev"], "settings": after})
        return config

    def switch(self, actor: str, device_id: str, output: str, on: bool,
               expires_in_s: float = COMMAND_EXPIRY_S) -> Command:
        """Switch one of a device's outputs on or off; returns the command (status ``sent``).

        The output must be one the device listed in its status. The command and, later, the
        device's answer go to the audit log as ``device.switch``. Whether the caller may switch
        (role switcher or admin) is the caller's to check.
        """
        self.must_exist(device_id)
        if self.registry.is_revoked(device_id):
            raise OperationError(f"{device_id}'s secret was taken away: it cannot connect to get the command."
                                 " Give it a new secret first")
        outputs = known_outputs(self.db, device_id)
        if not outputs:
            raise OperationError(f"{device_id} has not said which outputs it has: it lists them in its status"
                                 " when it connects (a switch_box device); wait until it has been online once")
        if output not in outputs:
            raise OperationError(f"{device_id} has no output {output!r}; it has {', '.join(sorted(outputs))}")
        if self.publisher is None or not hasattr(self.publisher, "send_command"):
            raise PublisherMissing("this dashboard has no broker account to send commands with:"
                                   " start it with `jisaku dashboard` or `jisaku demo`")
        command = self.commands.issue(device_id, "switch", {"output": output, "on": bool(on)},
                                      source="operator", issued_by=actor, expires_in_s=expires_in_s)
        return self.publisher.send_command(self.commands, command)

    def set_picture_mask(self, actor: str, device_id: str, areas: Any) -> int:
        """A camera's black-out areas (``[[x, y, w, h], …]``, fractions); returns their revision.

        Every public copy of the camera's pictures is made again with them before this returns.
        """
        self.must_exist(device_id)
        pictures = PictureStore(self.db)
        before, _ = pictures.mask(device_id)
        try:
            rev = pictures.set_mask(device_id, areas)
        except ValueError as err:
            raise OperationError(f"black-out areas: {err}") from None
        self.audit.record(actor, "device.picture_mask", device_id, {"areas": before},
                          {"areas": pictures.mask(device_id)[0], "rev": rev})
        return rev

    # ------------------------------------------------------------ shelters and disaster mode

    def open_shelters(self, actor: str, device_ids: list[str], is_open: bool) -> dict[str, str]:
        """Open (or close) shelters: each gets the setting ``open``; returns {id: problem} for those that failed."""
        problems = {}
        for device_id in device_ids:
            try:
                self.push_settings(actor, device_id, {"open": int(is_open)})
            except (OperationError, NotFound) as err:
                problems[device_id] = str(err)
        return problems

    def set_disaster_mode(self, actor: str, on: bool, town: str | None = None) -> dict[str, str]:
        """Disaster mode of one town (None: the first) on: a banner on its residents' pages and every
        shelter of the town opened; off: the banner goes and its shelters are closed. Other towns are
        untouched. Returns {id: problem} for shelters that could not be told."""
        town = town if town is not None else Towns(self.db).first()
        Towns(self.db).must_exist(town)
        shelters = [d.id for d in self.registry.devices(town=town) if d.kind == "shelter"]
        problems = self.open_shelters(actor, shelters, on)
        state = TownState(self.db)
        before = state.disaster_mode(town) is not None
        with self._together():
            state.set(DISASTER_MODE, on, actor, town)
            self.audit.record(actor, "town.disaster_mode", DISASTER_MODE, {"on": before},
                              {"on": on, "shelters": len(shelters), "not_reached": sorted(problems)}, town=town)
        return problems

    def must_exist(self, device_id: str) -> DeviceRecord:
        device = self.registry.get(device_id)
        if device is None:
            raise NotFound(f"no device {device_id!r}")
        return device

    # ------------------------------------------------------------ towns themselves

    def add_town(self, actor: str, town: Town) -> Town:
        """A new town of this deployment (``jisaku towns add``), with its audit entry."""
        try:
            _check_notify(town.notify)
            added = Towns(self.db).add(town)
        except TownError as err:
            raise OperationError(str(err)) from None
        self.audit.record(actor, "town.add", added.id, None, _town_json(added))
        return added

    def update_town(self, actor: str, town_id: str, **changes: Any) -> Town:
        """Change a town's settings; ``id=`` renames it in every town column (``jisaku towns set``)."""
        towns = Towns(self.db)
        try:
            _check_notify(changes.get("notify"))
            before = towns.must_exist(town_id)
            after = towns.update(town_id, **changes)
        except TownError as err:
            raise OperationError(str(err)) from None
        old, new = _town_json(before), _town_json(after)
        changed = [key for key in new if old[key] != new[key]]
        if changed:
            self.audit.record(actor, "town.update", after.id, {key: old[key] for key in changed},
                              {key: new[key] for key in changed})
        return after

    # ------------------------------------------------------------ operator accounts

    def add_user(self, actor: str, name: str, password: str, role: str, town: str | None = "",
                 within: str | None = None) -> None:
        """A new account of ``town`` ("" the account's own town, else the first; None: a joint-body
        account, which only a joint-body account may make)."""
        if town is None and within is not None:
            raise AccountError("only an account of every town (a joint body's) can make an account for every"
                               " town; leave the town out")
        if town is not None:
            try:
                town = self.town_for(within, town or None)
            except OperationError as err:
                raise AccountError(str(err)) from None
        with self._together():
            self.accounts.add(name, password, role, town=town)
            self.audit.record(actor, "user.add", name, None, {"role": role, "disabled": False})  # town: the user's

    def update_user(self, actor: str, name: str, role: str | None = None, disabled: bool | None = None) -> None:
        """Change a user's role or whether they may log in; what did not change is not recorded."""
        with self._together():
            user = self.accounts.get(name)
            if user is None:
                raise NotFound(f"no user {name!r}")
            before, after = {}, {}
            if role is not None and role != user.role:
                self.accounts.set_role(name, role)
                before["role"], after["role"] = user.role, role
            if disabled is not None and disabled != user.disabled:
                if disabled and name == actor:
                    raise AccountError("you cannot disable your own account; ask another admin")
                self.accounts.set_disabled(name, disabled)
                before["disabled"], after["disabled"] = user.disabled, disabled
            if after:
                self.audit.record(actor, "user.update", name, before, after)
            if disabled:
                self._end_sessions(name)

    def set_password(self, actor: str, name: str, password: str) -> None:
        with self._together():
            self.accounts.set_password(name, password)
            self.audit.record(actor, "user.password", name, None, None)  # that it changed, never what to
            self._end_sessions(name)

    def _end_sessions(self, name: str) -> None:
        """Log a user out everywhere (their password changed, or they were disabled)."""
        self.db.connection.execute("DELETE FROM operator_sessions WHERE user=?", (name,))

    # ------------------------------------------------------------ alert rules and alerts
    # Each saved first, then its entry written: not in one transaction, because the gateway's
    # alert engine, when it is ``alerts``, takes its own lock inside these calls, and holding
    # the database's write lock meanwhile could make it and the engine wait for each other.

    def _rule_in_town(self, rule: Rule | dict, within: str | None) -> Rule:
        """The rule with its town: its device's, or the one asked for (``town_for``). Devices it
        names in another town than ``within`` are refused as if they were not registered."""
        rule = rule if isinstance(rule, Rule) else Rule.model_validate(rule)
        if rule.device_id is not None and self.registry.get(rule.device_id) is not None \
                and self.visible_device(rule.device_id, within) is None:
            raise RuleError(f"device {rule.device_id!r} is not registered: check the id, or add it first")
        if rule.action is not None and self.registry.get(rule.action.switch.device_id) is not None \
                and self.visible_device(rule.action.switch.device_id, within) is None:
            raise RuleError(f"the action's device {rule.action.switch.device_id!r} is not registered: check the id")
        device = self.registry.get(rule.device_id) if rule.device_id is not None else None
        try:
            town = device.town if device is not None else self.town_for(within, rule.town)
        except OperationError as err:
            raise RuleError(str(err)) from None
        return rule.model_copy(update={"town": town})

    def add_rule(self, actor: str, rule: Rule | dict, within: str | None = None) -> Rule:
        rule = self._rule_in_town(rule, within)
        # Its owner is who made it (a practice rule notifies them alone): never what the body says.
        owner = actor if self.accounts.get(actor) is not None else None
        saved = self.alerts.add_rule(rule.model_copy(update={"owner": owner}))
        self.audit.record(actor, "rule.add", str(saved.id), None, _rule_json(saved))
        return saved

    def update_rule(self, actor: str, rule_id: int, rule: Rule | dict, within: str | None = None) -> Rule:
        before = self._rule(rule_id, within)
        rule = self._rule_in_town(rule, within)
        # The owner stays who made it, whatever the body says (None: AlertBook keeps it).
        saved = self.alerts.update_rule(rule_id, rule.model_copy(update={"owner": None}), user=actor)
        self.audit.record(actor, "rule.update", str(rule_id), _rule_json(before), _rule_json(saved))
        return saved

    def delete_rule(self, actor: str, rule_id: int, within: str | None = None) -> None:
        before = self._rule(rule_id, within)
        self.alerts.delete_rule(rule_id, user=actor)
        self.audit.record(actor, "rule.delete", str(rule_id), _rule_json(before), None)

    def acknowledge(self, actor: str, alert_id: int):
        """An operator has seen the alert; it stays open until its condition clears."""
        alert = self.alerts.acknowledge(alert_id, actor)
        self.audit.record(actor, "alert.acknowledge", str(alert_id), {"state": "raised"}, {"state": "acknowledged"})
        return alert

    def _rule(self, rule_id: int, within: str | None = None) -> Rule:
        rule = AlertBook(self.db).rule(rule_id)  # the engine does not look rules up by id
        if rule is None or (within is not None and rule.town != within):
            raise AlertNotFound(f"there is no rule {rule_id}")
        return rule


def _rule_json(rule: Rule) -> dict[str, Any]:
    return rule.model_dump(mode="json", exclude={"id"})


def _check_notify(table: dict | None) -> None:
    """A town's [notify] table, checked as jisaku.toml's is; OperationError says where it is wrong."""
    if table is not None:
        try:
            NotifyConfig.from_settings(table)
        except ValueError as err:
            raise OperationError(str(err).replace("jisaku.toml: ", "the town's ", 1)) from None


def _town_json(town: Town) -> dict[str, Any]:
    """A town for the audit log: its notification channels by name, never their URLs or passwords."""
    shown = asdict(town)
    if town.notify is not None:
        shown["notify"] = NotifyConfig.from_settings(town.notify).channel_names()
    return shown
