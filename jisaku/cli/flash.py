"""``jisaku flash``: put a kind's board code on a MicroPython board, ready to report.

It registers the device (or gives an existing one a new secret), writes the board's
``config.json``, copies ``firmware/lib`` to the board's ``/lib`` and the files of the kind
folder's ``board/`` (``kinds/snow_gauge/board``, say) to its root with mpremote, installs umqtt with mip, resets the board and waits until the
device says it is online. ``--dry-run`` prints the plan and changes nothing.

Example::

    export JISAKU_WIFI_SSID=townhall-iot JISAKU_WIFI_PASSWORD=...
    jisaku flash snow_gauge --id snow-3 --broker-host 192.168.1.10 --dry-run
    jisaku flash snow_gauge --id snow-3 --broker-host 192.168.1.10

The plan is built by one function that changes nothing (``build_plan``) and carried out by
another (``run_plan``), so what ``--dry-run`` shows is exactly what runs.

MicroPython itself must already be on the board: docs/flashing.md shows how (esptool for an
ESP32, a UF2 file for a Pico W).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jisaku.contract import kinds

from . import board
from .board import BoardError

# What the board needs besides jisaku's own files (it lands in /lib/umqtt).
MIP_PACKAGES = ["umqtt.simple"]
# Not worth the board's small flash: documentation and Python's caches.
SKIPPED_SUFFIXES = (".md",)
SKIPPED_NAMES = ("__pycache__",)
# The board's config.json is the one jisaku writes; an example's template stays behind.
CONFIG_NAMES = ("config.json", "config.example.json")
MASK = "********"


class FlashError(RuntimeError):
    """Bad input or an unusable firmware folder, with what to do about it."""


# ---------------------------------------------------------------- the request


@dataclass
class FlashRequest:
    """Everything ``jisaku flash`` was asked to do, checked."""

    example: str
    device_id: str
    kind: str
    wifi_ssid: str
    wifi_password: str
    broker_host: str
    broker_port: int
    # More brokers the board moves to, in order, when the first is gone (a standby box).
    more_brokers: list[tuple[str, int]] = field(default_factory=list)
    name: str = ""
    name_ja: str = ""                  # the name on the Japanese pages; "" shows `name` there
    public: bool = True
    lat: float | None = None
    lon: float | None = None
    secret: str | None = None          # given with --secret: used instead of making a new one
    settings: dict[str, Any] = field(default_factory=dict)
    pins: dict[str, Any] = field(default_factory=dict)
    wait_s: float = 60.0
    # The dashboard's address as the board sees it (http://192.168.1.10:8000): where it downloads
    # updates from afar. None: the board refuses update offers (no_server).
    server: str | None = None


def parse_pairs(pairs: list[str], what: str, example: str) -> dict[str, Any]:
    """``["left_after_s=45", "label=Gate"]`` -> ``{"left_after_s": 45, "label": "Gate"}``.

    A value that reads as JSON (a number, true/false, a list) is taken as such; anything
    else stays text.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sign, value = pair.partition("=")
        if not sign or not key:
            raise FlashError(f"{what} {pair!r} should be name=value, e.g. {example}")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return values


def is_loopback(host: str) -> bool:
    """True for addresses that mean "this computer itself", which a board cannot use."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name such as gateway.local: the board resolves it
    return address.is_loopback or address.is_unspecified


def lan_address() -> str | None:
    """This computer's address on its local network, as far as the routing table says."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if is_loopback(address) else address


def board_brokers(broker_url: str, hosts: list[str] | None, port: int | None) -> list[tuple[str, int]]:
    """The broker addresses for config.json: ``--broker-host`` (one or more, each ``host`` or
    ``host:port``, the first preferred) or JISAKU_BROKER's host."""
    from jisaku.contract.mqtt import BrokerAddress

    if not hosts:
        return [board_broker(broker_url, None, port)]
    found = []
    for item in " ".join(hosts).replace(",", " ").split():
        try:
            address = BrokerAddress.parse(item)
        except ValueError:
            raise FlashError(f"--broker-host {item!r} should be an address such as 192.168.1.10 or"
                             " 192.168.1.10:1883; several: --broker-host 192.168.1.10 192.168.1.11") from None
        given_port = item.rsplit(":", 1)[-1].isdigit()  # else --broker-port, else JISAKU_BROKER's
        found.append(board_broker(broker_url, address.host, address.port if given_port else port))
    return found


def board_broker(broker_url: str, host: str | None, port: int | None) -> tuple[str, int]:
    """The broker address for config.json: ``--broker-host`` or JISAKU_BROKER's host.

    The board needs an address it can reach over Wi-Fi, so 127.0.0.1 and localhost are
    refused with what to use instead.
    """
    from jisaku.contract.mqtt import BrokerAddress

    broker = BrokerAddress.parse(broker_url)
    host = host or broker.host
    if is_loopback(host):
        guess = lan_address()
        example = guess or "192.168.1.10"
        found = f" (this computer's seems to be {guess}; `hostname -I` lists them)" if guess else \
            " (`hostname -I` lists this computer's)"
        raise FlashError(
            f"the broker address {host} means \"this computer\" to whoever uses it, so the board would\n"
            f"look for the broker on itself. Give the address of this computer (or of the broker)\n"
            f"on the local network{found}: --broker-host {example}")
    return host, port or broker.port


def make_request(args: argparse.Namespace, broker_url: str, environ: dict[str, str] | None = None) -> FlashRequest:
    """Check the command line (and JISAKU_WIFI_SSID / JISAKU_WIFI_PASSWORD) and make a request."""
    from jisaku.contract import protocol

    environ = os.environ if environ is None else environ
    if not protocol.DEVICE_ID.match(args.id):
        raise FlashError(f"device id {args.id!r} must be 1-64 of a-z 0-9 . _ - starting with a letter"
                         " or digit, e.g. snow-3")
    ssid = args.wifi_ssid or environ.get("JISAKU_WIFI_SSID", "")
    if not ssid:
        raise FlashError("the board needs the Wi-Fi network's name: set JISAKU_WIFI_SSID (and"
                         " JISAKU_WIFI_PASSWORD), or pass --wifi-ssid NAME")
    password = args.wifi_password if args.wifi_password is not None else environ.get("JISAKU_WIFI_PASSWORD", "")
    if (args.lat is None) != (args.lon is None):
        raise FlashError("give both --lat and --lon (where the device stands), or neither")
    (host, port), *more_brokers = board_brokers(broker_url, args.broker_host, args.broker_port)
    example, kind = example_and_kind(args.example, args.kind)
    return FlashRequest(
        example=example, device_id=args.id, kind=kind,
        name=args.name or args.id, name_ja=args.name_ja or "", public=not args.private,
        lat=args.lat, lon=args.lon, wifi_ssid=ssid, wifi_password=password, broker_host=host, broker_port=port,
        more_brokers=more_brokers,
        secret=args.secret, wait_s=args.wait, server=board_server(getattr(args, "server", None)),
        settings=parse_pairs(args.settings or [], "setting", "left_after_s=45"),
        pins=parse_pairs(args.pins or [], "pin", "trigger=5"),
    )


def board_server(url: str | None) -> str | None:
    """``--server``, checked: a plain http:// address the board can reach (boards have no TLS)."""
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise FlashError(f"--server {url!r} should be the dashboard's address as the board sees it,"
                         " e.g. http://192.168.1.10:8000 (http: boards download over plain HTTP)")
    if is_loopback(parts.hostname):
        raise FlashError(f"--server {url!r} means \"this computer\" to the board: give this computer's"
                         " address on the local network, e.g. http://192.168.1.10:8000")
    return url.rstrip("/")


# ---------------------------------------------------------------- the firmware folder


def find_firmware(explicit: Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """The firmware folder (its ``lib/`` goes on every board): ``--firmware``, else JISAKU_FIRMWARE,
    else the one that came with jisaku.

    In a checkout of the repository that is ``<repository>/firmware``; an installed jisaku
    carries a copy as ``jisaku/firmware`` (package data); ``./firmware`` in the working
    folder is tried last.
    """
    environ = os.environ if environ is None else environ
    if explicit or environ.get("JISAKU_FIRMWARE"):
        folder = Path(explicit or environ["JISAKU_FIRMWARE"])
        if not (folder / "lib").is_dir():
            raise FlashError(f"{folder} is not a firmware folder: it has no lib/ folder")
        return folder
    jisaku_folder = Path(__file__).resolve().parent.parent  # jisaku/, whose firmware/ sits beside it or in it
    candidates = [jisaku_folder.parent / "firmware", jisaku_folder / "firmware", Path.cwd() / "firmware"]
    for folder in candidates:
        if (folder / "lib").is_dir():
            return folder
    raise FlashError("cannot find the firmware folder (firmware/ with lib/). It comes with\n"
                     "the jisaku repository: run jisaku from a checkout, or point at it with\n"
                     "--firmware PATH or JISAKU_FIRMWARE=PATH")


def list_examples() -> list[str]:
    """The kind folders that have board code (a ``board`` folder with a main.py)."""
    return sorted(name for name, folder in kinds.registry().folders.items()
                  if folder.board_path is not None and (folder.board_path / "main.py").is_file())


def example_and_kind(example: str, kind: str | None) -> tuple[str, str]:
    """The kind folder to flash and the device's kind: ``bus`` → (vehicle_tracker, bus).

    ``example`` is a kind folder (``vehicle_tracker``: its first kind, unless ``kind`` says) or a kind.
    """
    found = kinds.get(example)
    if kinds.folder(example) is None and found is not None:
        return found.folder.name, kind or found.id
    folder = kinds.folder(example)
    return example, kind or (folder.kinds[0].id if folder is not None else example)


def board_files(folder: Path, dest: str) -> list[tuple[Path, str]]:
    """Every file under ``folder`` with where it goes on the board (``dest`` + its relative path).

    Hidden files, Python caches, Markdown (documentation) and config templates stay on the
    computer.
    """
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") or part in SKIPPED_NAMES for part in parts):
            continue
        if path.is_file() and not path.name.endswith(SKIPPED_SUFFIXES) and path.name not in CONFIG_NAMES:
            files.append((path, dest.rstrip("/") + "/" + "/".join(parts)))
    return files


def example_folder(example: str) -> Path:
    """The board code of kind folder ``example`` (``kinds/<example>/board``), or FlashError naming those there are."""
    available = list_examples()
    if example not in available:
        listing = ", ".join(available) if available else "none: no kind folder has a board/ folder"
        raise FlashError(f"there is no example {example!r}; the examples are: {listing}")
    return kinds.folder(example).board_path


# ---------------------------------------------------------------- config.json


def board_config(request: FlashRequest, secret: str) -> dict[str, Any]:
    """What the board reads at start-up from /config.json."""
    config: dict[str, Any] = {
        "device_id": request.device_id,
        "secret": secret,
        "wifi": {"ssid": request.wifi_ssid, "password": request.wifi_password},
        "broker": {"host": request.broker_host, "port": request.broker_port},
    }
    if request.more_brokers:  # several: the board moves to the next when its broker is gone
        config["broker"] = " ".join(f"mqtt://{host}:{port}" for host, port
                                    in [(request.broker_host, request.broker_port), *request.more_brokers])
    if request.settings:
        config["settings"] = request.settings
    if request.pins:
        config["pins"] = request.pins
    if request.server:  # where the board downloads updates from afar (docs/updates.md)
        config["server"] = request.server
    config.update(wiring_tables(request.example))
    return config


# Tables of an example's config.example.json that describe the board's wiring, not its
# settings: a switch box's outputs (pins, safe states) and its switching rules. They go to
# config.json as written there: edit the example's file to match your wiring.
WIRING_TABLES = ("switching", "outputs")


def wiring_tables(example: str) -> dict[str, Any]:
    """The wiring tables of ``example``'s config.example.json, if it has any."""
    folder = kinds.folder(example)
    template = folder.board_path / "config.example.json" if folder is not None and folder.board_path else None
    if template is None or not template.is_file():
        return {}
    written = json.loads(template.read_text(encoding="utf-8"))
    return {name: written[name] for name in WIRING_TABLES if name in written}


def masked(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its secret and Wi-Fi password replaced by asterisks, for showing."""
    shown = json.loads(json.dumps(config))
    shown["secret"] = MASK
    if shown["wifi"]["password"]:
        shown["wifi"]["password"] = MASK
    return shown


def write_config(config: dict[str, Any]) -> Path:
    """Write config.json to a temporary file only its owner can read; the caller removes it."""
    handle, name = tempfile.mkstemp(prefix="jisaku-config-", suffix=".json")  # mode 0600
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(config, file, indent=1)
    return Path(name)


# ---------------------------------------------------------------- the plan


@dataclass
class Step:
    """One numbered step of the plan: what it does (``lines``) and how (``do`` + ``args``)."""

    title: str
    do: str                                  # check, register, config, copy, mip, reset, wait
    lines: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)


# Shown where the port goes while no board is plugged in.
PORT_PLACEHOLDER = "PORT"


# The board keeps the settings operators last sent in /settings.json, and they win over
# config.json's; a fresh flash starts from config.json (the retained config comes back online).
# A board flashed again starts afresh: the operators' saved settings go, and so does the
# pointer to a version downloaded from afar (/app/state.json) and a waiting offer, so the
# files just copied are what runs.
FORGET_SETTINGS = ("import os\nfor p in ('/settings.json', '/app/state.json', '/update/offer.json'):\n"
                   " try: os.remove(p)\n except OSError: pass")


def mkdir_code(folders: list[str]) -> str:
    """MicroPython code that makes ``folders`` on the board, leaving those that exist."""
    return f"import os\nfor d in {tuple(folders)!r}:\n try: os.mkdir(d)\n except OSError: pass"


def copy_args(files: list[tuple[Path, str]]) -> list[str]:
    """mpremote arguments that make the folders the files need and copy them, in one connection."""
    folders = sorted({dest.rsplit("/", 1)[0] for _, dest in files} - {""})
    args = ["exec", mkdir_code(folders)] if folders else []
    for source, dest in files:
        args += ["+", "cp", str(source), ":" + dest] if args else ["cp", str(source), ":" + dest]
    return args


def files(listing: list) -> str:
    return f"{len(listing)} file{'' if len(listing) == 1 else 's'}"


def shown_command(port: str | None, args: list[str]) -> str:
    """How a step's mpremote command reads in the plan (it runs as ``python -m mpremote``)."""
    return "$ " + shlex.join(["mpremote", "connect", port or PORT_PLACEHOLDER, *args])


def build_plan(request: FlashRequest, firmware: Path, port: str | None, port_note: str,
               registered: bool, watch_broker: str) -> list[Step]:
    """The steps that flash ``request`` onto the board at ``port``, changing nothing.

    ``registered`` says whether the device id is in the registry already; ``port_note`` how
    the port was found; ``watch_broker`` where this computer watches for the device.
    """
    lib_files = board_files(firmware / "lib", "/lib") if (firmware / "lib").is_dir() else []
    example_files = board_files(example_folder(request.example), "")
    if (firmware / "boot.py").is_file():  # starts the right version, updates from afar (lib/versions.py)
        example_files.append((firmware / "boot.py", "/boot.py"))
    shown_port = port or PORT_PLACEHOLDER
    steps = [Step(
        f"Check that the board on {shown_port} runs MicroPython", "check",
        [port_note, shown_command(port, ["exec", board.CHECK_CODE])])]

    where = f" at {request.lat},{request.lon}" if request.lat is not None else ""
    named = f"name {request.name!r}" + (f" / {request.name_ja!r}" if request.name_ja else "")
    about = f"kind {request.kind}, {named}, {'public' if request.public else 'private'}{where}"
    if not registered:
        lines = [f"a new device: {about}", "its secret goes only into config.json (not shown, not kept here)"]
        if request.secret:
            lines[1] = "with the secret given by --secret"
        steps.append(Step(f"Register {request.device_id} in the device registry", "register", lines))
    elif request.secret:
        steps.append(Step(f"Use the secret given for {request.device_id}", "register",
                          ["already registered: the --secret given is checked against the registry"]))
    else:
        steps.append(Step(f"Give {request.device_id} a NEW secret", "register", [
            f"{request.device_id} is already registered: its old secret STOPS WORKING now, so a board",
            "or program still using it is locked out (pass --secret to keep the old one instead)"]))

    if lib_files:
        steps.append(Step(f"Copy the library to /lib ({files(lib_files)})", "copy",
                          [f"{board.repo_path(src)} -> :{dest}" for src, dest in lib_files]
                          + [shown_command(port, ["cp", "FILE", ":/lib/..."]) + "  (one connection for all)"],
                          {"files": lib_files}))
    else:
        steps.append(Step("Copy the library to /lib: nothing to copy", "copy",
                          [f"{firmware / 'lib'} has no files"], {"files": []}))
    steps.append(Step(f"Copy example {request.example} to the board's root ({files(example_files)})", "copy",
                      [f"{board.repo_path(src)} -> :{dest}" for src, dest in example_files]
                      + [shown_command(port, ["cp", "FILE", ":/..."]) + "  (one connection for all)"],
                      {"files": example_files}))

    shown_config = json.dumps(masked(board_config(request, MASK)), indent=2, ensure_ascii=False)
    steps.append(Step("Write config.json (a temporary file only you can read) and copy it to /config.json",
                      "config", ["    " + line for line in shown_config.splitlines()]
                      + [shown_command(port, ["cp", "<temporary file>", ":/config.json"]),
                         "the temporary file is removed afterwards",
                         "settings the board kept from operators (/settings.json) are removed, so these count;"
                         " operators' retained settings reach it again once it is online"]))

    for package in MIP_PACKAGES:
        mip = ["mip", "install", package]
        steps.append(Step(f"Install {package} with mip (to /lib; this computer needs the internet)", "mip",
                          [shown_command(port, mip)], {"mpremote": mip}))
    steps.append(Step("Reset the board so that main.py starts", "reset",
                      [shown_command(port, ["reset"])], {"mpremote": ["reset"]}))
    if request.wait_s > 0:
        steps.append(Step(f"Wait up to {request.wait_s:g} s for {request.device_id} to say it is online", "wait", [
            f"watching jisaku/{request.device_id}/status on {watch_broker} as the gateway",
            "(jisaku connects to it before changing anything, so an unreachable broker stops here early)"]))
    else:
        steps.append(Step("Do not wait for the device (--wait 0)", "wait"))
    return steps


def format_plan(steps: list[Step], request: FlashRequest, firmware: Path) -> str:
    """The plan as numbered text."""
    out = [f"Plan: flash example {request.example} as {request.device_id} (firmware from {firmware})"]
    for number, step in enumerate(steps, 1):
        out.append(f"{number:2}. {step.title}")
        out += [f"      {line}" for line in step.lines]
    return "\n".join(out)


# ---------------------------------------------------------------- carrying it out


def register(registry, request: FlashRequest) -> tuple[str, str]:
    """Register the device, or give an existing one a new secret (or check ``request.secret``).

    Returns ``(secret, what was done)``. Each change goes to the audit log, as with
    ``jisaku devices add`` and ``jisaku devices rotate``; the secret never does.
    """
    from jisaku.gateway.audit import cli_actor
    from jisaku.gateway.changes import Changes
    from jisaku.gateway.registry import DeviceRecord

    changes = Changes(registry.db)  # as `jisaku devices add / rotate` and the operator pages: audited
    if registry.get(request.device_id) is None:
        device = DeviceRecord(id=request.device_id, kind=request.kind, name=request.name, public=request.public,
                              lat=request.lat, lon=request.lon, name_ja=request.name_ja)
        secret = changes.add_device(cli_actor(), device)
        if request.secret:
            registry.set_secret(request.device_id, request.secret)
            secret = request.secret
        return secret, f"registered {request.device_id}"
    if request.secret:
        if not registry.check_credentials(request.device_id, request.secret):
            raise FlashError(f"the --secret given is not {request.device_id}'s: leave --secret out to give it"
                             " a new one")
        return request.secret, f"{request.device_id}'s secret checked"
    secret = changes.rotate_secret(cli_actor(), request.device_id)
    return secret, f"{request.device_id} has a new secret; the old one no longer works"


def run_plan(steps: list[Step], request: FlashRequest, port: str, registry, watch: board.StatusWatch | None,
             say=print) -> bool:
    """Carry out ``steps`` on the board at ``port``; True when the device came online.

    Raises BoardError or FlashError, with what to do, at the first step that fails.
    """
    done: dict[str, Any] = {"secret": None, "online": False}  # what later steps need
    for number, step in enumerate(steps, 1):
        say(f"[{number}/{len(steps)}] {step.title}", flush=True)
        try:
            run_step(step, request, port, registry, watch, done, say)
        except BoardError as err:
            if done["secret"] is None:
                raise
            raise BoardError(f"{err}\n(The board is only partly flashed. Run the same jisaku flash again"
                             " once it is fixed: it starts over, with a new secret.)") from None
    return done["online"]


def run_step(step: Step, request: FlashRequest, port: str, registry, watch, done: dict, say=print) -> None:
    """Carry out one step of the plan, noting in ``done`` the secret and whether it came online."""
    if step.do == "check":
        say(f"      it is: {board.check_micropython(port) or 'MicroPython'}")
        if watch is not None:
            watch.start()  # before anything changes: an unreachable broker stops us here
    elif step.do == "register":
        done["secret"], what = register(registry, request)
        say(f"      {what}")
    elif step.do == "config":
        path = write_config(board_config(request, done["secret"]))
        try:
            board.run_mpremote(port, ["exec", FORGET_SETTINGS, "+", "cp", str(path), ":/config.json"])
        finally:
            path.unlink()
    elif step.do == "copy" and step.args["files"]:
        board.run_mpremote(port, copy_args(step.args["files"]))
    elif step.do == "mip":
        try:
            board.run_mpremote(port, step.args["mpremote"])
        except BoardError as err:
            raise BoardError(f"{err}\nmip downloads the package from micropython.org: check that this"
                             " computer is online, then run the same command again.") from None
    elif step.do == "reset":
        board.run_mpremote(port, step.args["mpremote"], timeout_s=30)
    elif step.do == "wait" and watch is not None:
        done["online"] = watch.wait(request.wait_s)
        say(f"      {request.device_id} is online." if done["online"] else "      no word from it yet.")


def cmd_flash(args: argparse.Namespace) -> None:
    from .common import load_settings, open_registry

    settings = load_settings()
    try:
        request = make_request(args, settings.broker)
        firmware = find_firmware(Path(args.firmware) if args.firmware else None)
        example_folder(request.example)
        port, port_note = args.port, f"port {args.port} (from --port)"
        if port is None:
            try:
                port, chip = board.find_port()
                port_note = f"port {port} found on USB: {chip}"
            except BoardError as err:
                if not args.dry_run:
                    raise
                port_note = str(err).splitlines()[0].rstrip(".:") + " now (plug the board in, or pass --port)"
        registered = settings.sqlite_path.exists() and open_registry(settings).get(request.device_id) is not None
        steps = build_plan(request, firmware, port, port_note, registered, settings.broker)
        print(format_plan(steps, request, firmware), flush=True)
        if args.dry_run:
            print("\nDry run: nothing was changed. Run it again without --dry-run to do this.")
            return
        print()
        board.check_port(port)
        registry = open_registry(settings)
        watch = None
        if request.wait_s > 0:
            gateway_secret = (os.environ.get("JISAKU_GATEWAY_SECRET")
                              or registry.service_secret("_gateway", settings.secrets_dir))
            watch = board.StatusWatch(request.device_id, settings.broker, "_gateway", gateway_secret)
        try:
            online = run_plan(steps, request, port, registry, watch)
        finally:
            if watch is not None:
                watch.stop()
    except (FlashError, BoardError) as err:
        sys.exit(f"jisaku flash: {err}")
    if request.wait_s > 0 and not online:
        sys.exit(board.NEVER_ONLINE_HELP.format(
            device_id=request.device_id, wait=request.wait_s, host=request.broker_host,
            port=request.broker_port, port_name=port))
    print(f"\nDone: {request.device_id} is flashed{' and online' if online else ''}. "
          f"See it with: jisaku devices list")


def add_parser(commands) -> None:
    """Add ``jisaku flash`` to the ``jisaku`` subcommands."""
    flash = commands.add_parser(
        "flash", help="put an example on a MicroPython board over USB, registered and configured",
        description="Register the device, write its config.json and copy firmware/lib and the kind's board code"
                    " to a MicroPython board with mpremote, then wait for it to come online."
                    " MicroPython itself must be on the board: see docs/flashing.md.")
    flash.add_argument("example", help="a kind folder with board code (kinds/<name>/board), e.g. snow_gauge;"
                                       " or a kind, e.g. garbage_truck")
    flash.add_argument("--id", required=True, help="the device id, e.g. snow-3")
    flash.add_argument("--kind", help="bus, garbage_truck, float, ... (default: the kind folder's first kind)")
    flash.add_argument("--name", help="the name residents see (default: the id)")
    flash.add_argument("--name-ja", help="the name on the Japanese pages (default: none; they show --name)")
    flash.add_argument("--private", action="store_true", help="keep it off the residents' pages")
    flash.add_argument("--lat", type=float, help="where a device that does not move stands")
    flash.add_argument("--lon", type=float)
    flash.add_argument("--secret", help="the secret of an already registered device (else it gets a new one)")
    flash.add_argument("--port", help="the board's serial port, e.g. /dev/ttyUSB0 (default: found on USB)")
    flash.add_argument("--wifi-ssid", help="the Wi-Fi network (default: $JISAKU_WIFI_SSID); 2.4 GHz only")
    flash.add_argument("--wifi-password", help="better: set $JISAKU_WIFI_PASSWORD, which stays out of shell history")
    flash.add_argument("--broker-host", nargs="+", metavar="HOST",
                       help="the broker's address as the board sees it, e.g. 192.168.1.10 (default: the host"
                            " of JISAKU_BROKER); several, the first preferred, for a board that moves to the"
                            " next when its broker is gone: 192.168.1.10 192.168.1.11:1884")
    flash.add_argument("--broker-port", type=int, help="default: the port of JISAKU_BROKER")
    flash.add_argument("--settings", nargs="+", action="extend", metavar="NAME=VALUE",
                       help="the example's settings, e.g. interval_s=300")
    flash.add_argument("--pins", nargs="+", action="extend", metavar="NAME=PIN",
                       help="pins other than the example's defaults, e.g. trigger=5 echo=18")
    flash.add_argument("--firmware", help="the firmware folder with lib/ (default: $JISAKU_FIRMWARE, or the repository's)")
    flash.add_argument("--server", metavar="URL",
                       help="the dashboard's address as the board sees it, e.g. http://192.168.1.10:8000:"
                            " the board downloads updates from afar there (without it, it refuses them)")
    flash.add_argument("--wait", type=float, default=60, help="seconds to wait for it to come online (0: do not)")
    flash.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    flash.set_defaults(run=cmd_flash)
