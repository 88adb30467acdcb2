"""What to put on a new device: ready-to-copy settings, shown once together with its secret.

`jisaku devices add` and the operators' web page both call `device_snippets`; each shows
the snippets that fit the device:

- ``config.json`` for a MicroPython board (fill in the Wi-Fi name and password);
- a ``device.toml`` start and the command that runs it, for a Raspberry Pi;
- for vehicles, the Traccar Client server URL and device identifier for a phone.

Example::

    snippets = device_snippets(DeviceRecord("snow-3", "snow_gauge"), secret,
                               broker_url="mqtt://192.168.1.10:1883", http_url="http://192.168.1.10:8000")
    print(snippets.config_json)        # {"device_id": "snow-3", "secret": "...", ...}
    snippets.traccar_url               # None: a snow gauge is not a phone

The secret is in every snippet, so show them only where the secret itself may be shown
(once, to the operator who asked), and never log them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import quote, urlsplit

from jisaku.contract import kinds
from jisaku.contract.mqtt import BrokerAddress

from .registry import DeviceRecord


@dataclass(frozen=True)
class DeviceSnippets:
    """Ready-to-copy settings for one device. Every field but `warnings` contains the secret."""

    device_id: str
    config_json: str                # MicroPython board: save as /config.json
    device_toml: str                # Raspberry Pi: the [device] table of device.toml
    pi_command: str                 # Raspberry Pi: how to run it with its secret
    traccar_url: str | None         # phone: Traccar Client's "Server URL" (None if the kind does not move)
    traccar_identifier: str | None  # phone: Traccar Client's "Device identifier"
    warnings: tuple[str, ...] = ()  # e.g. an address only this computer can reach


def _is_local(host: str) -> bool:
    """127.0.0.1, ::1, localhost, 0.0.0.0: an address a device elsewhere cannot use."""
    if host in ("localhost", ""):
        return True
    try:
        address = ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def device_snippets(device: DeviceRecord, secret: str, broker_url: str, http_url: str) -> DeviceSnippets:
    """The snippets for `device` with `secret`; `broker_url` and `http_url` as devices reach them.

    `broker_url` is like ``mqtt://192.168.1.10:1883``; `http_url` is the dashboard's
    address as phones see it, like ``https://jisaku.example.jp`` (``host:port`` means http).
    """
    broker = BrokerAddress.parse(broker_url)
    if "://" not in http_url:
        http_url = f"http://{http_url}"
    http_url = http_url.rstrip("/")
    warnings = []
    if _is_local(broker.host):
        warnings.append(f"the broker address {broker.host} only works on this computer: give devices"
                        " this computer's address on the network (e.g. --broker-url mqtt://192.168.1.10:1883)")

    board = {
        "device_id": device.id,
        "secret": secret,
        "wifi": {"ssid": "", "password": ""},
        "broker": {"host": broker.host, "port": broker.port},
    }
    kind = kinds.get(device.kind)
    lines = [
        "[device]",
        f"id = {_toml_string(device.id)}",
        f"kind = {_toml_string(device.kind)}",
        *([] if kind else ['app = "FILE.py:CLASS"   # fill in: your own code, as no kind folder describes this kind']),
        f"name = {_toml_string(device.name or device.id)}",
        *([f"name_ja = {_toml_string(device.name_ja)}"] if device.name_ja else []),
        f"public = {'true' if device.public else 'false'}",
    ]
    if device.interval_s is not None:
        lines.append(f"interval_s = {device.interval_s:g}")
    if device.lat is not None and device.lon is not None:
        lines.append(f"location = [{device.lat}, {device.lon}]")
    example = f"kinds/{kind.folder.name}" if kind else "FOLDER"
    # The secret goes in its own file (not device.toml, which is copied and shared).
    pi_command = (f"echo '{secret}' > {device.id}.secret && chmod 600 {device.id}.secret\n"
                  f"JISAKU_BROKER={broker} jisaku device run {example} --id {device.id}"
                  f" --secret-file {device.id}.secret")

    traccar_url = traccar_identifier = None
    if kinds.moves(device.kind):  # a phone with Traccar Client can be any kind that moves
        traccar_url = f"{http_url}/osmand?key={quote(secret, safe='')}"
        traccar_identifier = device.id
        host = urlsplit(http_url).hostname or ""
        if _is_local(host):
            warnings.append(f"the dashboard address {host} only works on this computer: phones need the"
                            " address they can reach (e.g. --http-url https://jisaku.example.jp)")
        elif not http_url.startswith("https://"):
            warnings.append("the phone's URL carries its secret: use https:// outside a trial on the office Wi-Fi")

    return DeviceSnippets(
        device_id=device.id,
        config_json=json.dumps(board, indent=2, ensure_ascii=False),
        device_toml="\n".join(lines) + "\n",
        pi_command=pi_command,
        traccar_url=traccar_url,
        traccar_identifier=traccar_identifier,
        warnings=tuple(warnings),
    )


def format_snippets(snippets: DeviceSnippets) -> str:
    """The snippets as text for a terminal: what `jisaku devices add` prints after the secret."""
    parts = []
    if snippets.traccar_url:
        parts += ["Phone (Traccar Client, docs/phones.md), in its Settings:",
                  f"  Device identifier: {snippets.traccar_identifier}",
                  f"  Server URL:        {snippets.traccar_url}", ""]
    parts += ["MicroPython board: save as config.json (fill in the Wi-Fi name and password):",
              _indent(snippets.config_json), "",
              "Raspberry Pi: the [device] table of its device.toml:",
              _indent(snippets.device_toml.rstrip("\n")), "",
              "and run it with its secret in a file of its own:",
              _indent(snippets.pi_command)]
    for warning in snippets.warnings:
        parts += ["", f"Note: {warning}"]
    return "\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
