"""``jisaku flash``: the plan it shows, the registry it changes, and the errors a user meets.

There is no board here, so the steps that talk to one are checked through the plan (which is
what runs), and the failures through real ports that are missing or silent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import paho.mqtt.publish as publish
import pytest
from serial.tools.list_ports_common import ListPortInfo

from jisaku.cli import board, flash
from jisaku.cli import main
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.secrets import new_secret

from .brokers import EmbeddedBrokerThread, MosquittoServer, mosquitto_available
from .conftest import require

REPO = Path(__file__).resolve().parent.parent
REPO_FIRMWARE = REPO / "firmware"
SECRET_WIFI = "hunter2-wifi-password"


@pytest.fixture
def firmware(tmp_path) -> Path:
    """A small firmware library of our own: the layout the real firmware/ has (the boards' own
    code comes from the kind folders, kinds/<name>/board)."""
    root = tmp_path / "firmware"
    files = {
        "lib/jisaku_link.py": "# link\n",
        "lib/jisaku/__init__.py": "",
        "lib/jisaku/sensors.py": "# sensors\n",
        "lib/README.md": "not for the board\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A deployment of our own: its data folder, a LAN broker, Wi-Fi from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_BROKER", "mqtt://192.168.1.10:1883")
    monkeypatch.setenv("JISAKU_WIFI_SSID", "townhall-iot")
    monkeypatch.setenv("JISAKU_WIFI_PASSWORD", SECRET_WIFI)
    for name in ("JISAKU_FIRMWARE", "JISAKU_STORE", "JISAKU_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def registry(env) -> Registry:
    return Registry(Database(env / "data" / "jisaku.db"))


def flash_cli(capsys, *argv) -> tuple[int, str]:
    """Run ``jisaku flash ARGV``; (exit code, everything it printed)."""
    try:
        main(["flash", *argv])
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
        if isinstance(exit.code, str):
            print(exit.code)
    out = capsys.readouterr()
    return code, out.out + out.err


# ---------------------------------------------------------------- the plan


def test_dry_run_shows_every_step_and_file_and_no_secret(env, firmware, capsys):
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware),
                          "--port", "/dev/ttyUSB0", "--settings", "interval_s=300", "--dry-run")
    assert code == 0, out
    steps = [line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert [line.split(".", 1)[0].strip() for line in steps] == [str(n) for n in range(1, 9)]
    for expected in (
        "Check that the board on /dev/ttyUSB0 runs MicroPython",
        "Register snow-3", "kind snow_gauge",
        '"device_id": "snow-3"', '"ssid": "townhall-iot"', '"host": "192.168.1.10"', '"interval_s": 300',
        "<temporary file>' :/config.json",
        "lib/jisaku_link.py -> :/lib/jisaku_link.py",
        "lib/jisaku/__init__.py -> :/lib/jisaku/__init__.py",
        "lib/jisaku/sensors.py -> :/lib/jisaku/sensors.py",
        "kinds/snow_gauge/board/main.py -> :/main.py",
        "kinds/snow_gauge/board/gauge.py -> :/gauge.py",
        "mpremote connect /dev/ttyUSB0 mip install umqtt.simple",
        "mpremote connect /dev/ttyUSB0 reset",
        "Wait up to 60 s for snow-3", "jisaku/snow-3/status",
        "nothing was changed",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert "README" not in out, "documentation stays on the computer"
    assert "config.example.json" not in out, "the board's config.json is the one jisaku writes"
    assert SECRET_WIFI not in out
    assert '"secret": "********"' in out and '"password": "********"' in out
    assert not (env / "data" / "jisaku.db").exists(), "a dry run registers nothing"


def test_dry_run_without_a_board_still_shows_the_plan(env, firmware, capsys):
    code, out = flash_cli(capsys, "printer_tray", "--id", "tray-1", "--firmware", str(firmware), "--dry-run")
    assert code == 0, out
    assert "no board found on USB now" in out
    assert "mpremote connect PORT reset" in out
    assert "kinds/printer_tray/board/main.py -> :/main.py" in out
    assert "kind printer_tray" in out


def test_plan_for_a_registered_device_says_its_secret_changes(env, firmware, capsys):
    registry(env).add_device(DeviceRecord("bus-7", "bus"))
    code, out = flash_cli(capsys, "vehicle_tracker", "--id", "bus-7", "--firmware", str(firmware),
                          "--port", "/dev/ttyUSB0", "--dry-run")
    assert code == 0, out
    assert "Give bus-7 a NEW secret" in out and "old secret STOPS WORKING" in out


def test_kind_follows_the_example_unless_given(env, firmware):
    plan = flash_cli_plan(env, firmware, "vehicle_tracker", "--id", "float-1")
    assert "kind bus" in "\n".join(plan[1].lines)
    plan = flash_cli_plan(env, firmware, "vehicle_tracker", "--id", "float-1", "--kind", "float")
    assert "kind float" in "\n".join(plan[1].lines)
    plan = flash_cli_plan(env, firmware, "garbage_truck", "--id", "garbage-3")  # a kind: its folder's board
    assert "kind garbage_truck" in "\n".join(plan[1].lines)
    assert "kinds/vehicle_tracker/board/main.py -> :/main.py" in "\n".join(line for step in plan for line in step.lines)


def flash_cli_plan(env, firmware, *argv) -> list[flash.Step]:
    """The plan ``jisaku flash ARGV`` would carry out, built by the same functions."""
    args = flash_parser().parse_args(["flash", *argv])
    request = flash.make_request(args, "mqtt://192.168.1.10:1883")
    return flash.build_plan(request, firmware, "/dev/ttyUSB0", "given", False, "mqtt://192.168.1.10:1883")


def flash_parser():
    from jisaku.cli import parser

    return parser()


def test_copy_commands_make_the_folders_and_copy_every_file(firmware):
    files = flash.board_files(firmware / "lib", "/lib")
    args = flash.copy_args(files)
    assert args[0] == "exec" and "'/lib', '/lib/jisaku'" in args[1]
    copies = [args[i + 1:i + 3] for i, word in enumerate(args) if word == "cp"]
    assert copies == [[str(src), ":" + dest] for src, dest in files]
    assert [dest for _, dest in files] == ["/lib/jisaku/__init__.py", "/lib/jisaku/sensors.py", "/lib/jisaku_link.py"]


def test_config_json_is_written_for_the_owner_only(env, firmware):
    args = flash_parser().parse_args(["flash", "snow_gauge", "--id", "snow-3", "--pins", "trigger=5", "echo=18"])
    request = flash.make_request(args, "mqtt://192.168.1.10:1883")
    path = flash.write_config(flash.board_config(request, "s3cret"))
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert json.loads(path.read_text()) == {
            "device_id": "snow-3", "secret": "s3cret",
            "wifi": {"ssid": "townhall-iot", "password": SECRET_WIFI},
            "broker": {"host": "192.168.1.10", "port": 1883},
            "pins": {"trigger": 5, "echo": 18},
        }
    finally:
        path.unlink()


# ---------------------------------------------------------------- registering


def test_registering_creates_the_device_with_a_working_secret(env):
    args = flash_parser().parse_args(["flash", "snow_gauge", "--id", "snow-3", "--name", "Town hall",
                                      "--lat", "36.14", "--lon", "137.25", "--private"])
    reg = registry(env)
    secret, what = flash.register(reg, flash.make_request(args, "mqtt://192.168.1.10:1883"))
    assert what == "registered snow-3"
    assert reg.get("snow-3") == DeviceRecord("snow-3", "snow_gauge", "Town hall", False, None, 36.14, 137.25,
                                             town="main")
    assert reg.check_credentials("snow-3", secret)
    entry = AuditLog(reg.db).entries(target="snow-3")[0]
    assert entry["action"] == "device.add" and secret not in json.dumps(entry)


def test_flashing_a_registered_device_again_locks_out_its_old_secret(env):
    reg = registry(env)
    old = reg.add_device(DeviceRecord("snow-3", "snow_gauge"))
    args = flash_parser().parse_args(["flash", "snow_gauge", "--id", "snow-3"])
    new, what = flash.register(reg, flash.make_request(args, "mqtt://192.168.1.10:1883"))
    assert "new secret" in what
    assert reg.check_credentials("snow-3", new)
    assert not reg.check_credentials("snow-3", old)
    assert AuditLog(reg.db).entries(target="snow-3")[0]["action"] == "device.rotate_secret"


def test_a_given_secret_is_kept_only_if_it_is_the_devices(env):
    reg = registry(env)
    old = reg.add_device(DeviceRecord("snow-3", "snow_gauge"))
    for given, accepted in ((old, True), ("not-it", False)):
        args = flash_parser().parse_args(["flash", "snow_gauge", "--id", "snow-3", "--secret", given])
        request = flash.make_request(args, "mqtt://192.168.1.10:1883")
        if accepted:
            assert flash.register(reg, request)[0] == old
        else:
            with pytest.raises(flash.FlashError, match="not snow-3's"):
                flash.register(reg, request)
    assert reg.check_credentials("snow-3", old), "a wrong --secret changes nothing"


def test_every_new_secret_can_be_pasted_after_dash_dash_secret():
    # One token in 64 used to start with "-", which argparse reads as an option.
    parser = flash_parser()
    for _ in range(500):
        secret = new_secret()
        args = parser.parse_args(["flash", "snow_gauge", "--id", "snow-3", "--secret", secret])
        assert args.secret == secret


# ---------------------------------------------------------------- what users get wrong


def test_no_board_at_the_given_port_fails_with_what_to_do_and_changes_nothing(env, firmware, capsys):
    old = registry(env).add_device(DeviceRecord("snow-3", "snow_gauge"))
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware),
                          "--port", "/dev/ttyNOPE")
    assert code != 0
    assert "there is no /dev/ttyNOPE" in out
    assert "data USB cable" in out and "ls /dev/ttyUSB* /dev/ttyACM*" in out and "dialout" in out
    assert registry(env).check_credentials("snow-3", old), "the secret is not rotated for a board that is not there"


def test_no_board_on_usb_fails_with_what_to_do(env, firmware, capsys):
    if any(board.describe_chip(p) for p in board.list_ports.comports()):
        pytest.skip("a board is plugged into this machine")
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware))
    assert code != 0
    assert "no board found on USB" in out and "data USB cable" in out and "--port" in out
    assert not (env / "data" / "jisaku.db").exists()


def port(device: str, vid: int | None, description: str = "") -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.description = vid, 0x1234 if vid else None, description
    return info


def test_port_detection_picks_the_one_board_and_asks_when_there_are_several():
    serial_console = port("/dev/ttyS0", None)
    assert board.find_port([serial_console, port("/dev/ttyUSB0", 0x10C4)]) == (
        "/dev/ttyUSB0", "Silicon Labs CP210x (ESP32 DevKit)")
    assert board.find_port([port("/dev/ttyACM0", 0x2E8A)])[0] == "/dev/ttyACM0"
    with pytest.raises(board.BoardError) as several:
        board.find_port([port("/dev/ttyUSB0", 0x1A86), port("/dev/ttyACM0", 0x2E8A)])
    assert "/dev/ttyUSB0" in str(several.value) and "/dev/ttyACM0" in str(several.value)
    assert "--port" in str(several.value)
    with pytest.raises(board.BoardError, match="no board found on USB"):
        board.find_port([serial_console])
    with pytest.raises(board.BoardError, match="USB serial ports exist.*\n.*ttyUSB3.*Arduino"):
        board.find_port([port("/dev/ttyUSB3", 0x2341, "Arduino Uno")])


def test_a_board_without_micropython_points_at_the_flashing_guide():
    """A serial port where nothing answers, as a board with other firmware does: a real pty."""
    controller, device = os.openpty()
    try:
        with pytest.raises(board.BoardError) as error:
            board.check_micropython(os.ttyname(device), timeout_s=3)
    finally:
        os.close(controller)
        os.close(device)
    message = str(error.value)
    assert "MicroPython is probably not" in message and "docs/flashing.md" in message
    assert "esptool" in message and "UF2" in message


@pytest.mark.parametrize("broker, host_flag", [
    ("mqtt://127.0.0.1:1883", []),
    ("mqtt://localhost:1883", []),
    ("mqtt://192.168.1.10:1883", ["--broker-host", "0.0.0.0"]),
])
def test_a_broker_address_the_board_cannot_reach_is_refused(env, firmware, capsys, monkeypatch, broker, host_flag):
    monkeypatch.setenv("JISAKU_BROKER", broker)
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware), "--dry-run",
                          *host_flag)
    assert code != 0
    assert "this computer" in out and "--broker-host" in out and "local network" in out
    assert "Plan:" not in out


def test_broker_host_given_for_a_local_broker_is_used(env, firmware, capsys, monkeypatch):
    monkeypatch.setenv("JISAKU_BROKER", "mqtt://127.0.0.1:1884")
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware), "--dry-run",
                          "--broker-host", "192.168.1.23")
    assert code == 0, out
    assert '"host": "192.168.1.23"' in out and '"port": 1884' in out


def test_an_unknown_example_lists_the_ones_there_are(env, firmware, capsys):
    code, out = flash_cli(capsys, "snow-gauge", "--id", "snow-3", "--firmware", str(firmware), "--dry-run")
    assert code != 0
    assert "no example 'snow-gauge'" in out
    assert "printer_tray, snow_gauge, switch_box, vehicle_tracker" in out


def test_missing_wifi_name_says_how_to_give_it(env, firmware, capsys, monkeypatch):
    monkeypatch.delenv("JISAKU_WIFI_SSID")
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware), "--dry-run")
    assert code != 0 and "JISAKU_WIFI_SSID" in out and "--wifi-ssid" in out


def test_the_repository_firmware_examples_fit_the_plan(env):
    """Every kind folder's board code gets the whole library and its main.py."""
    examples = flash.list_examples()
    assert examples == ["printer_tray", "snow_gauge", "switch_box", "vehicle_tracker"]
    assert flash.find_firmware() == REPO_FIRMWARE
    lib = flash.board_files(REPO_FIRMWARE / "lib", "/lib")
    for example in examples:
        args = flash_parser().parse_args(["flash", example, "--id", "x-1"])
        plan = flash.build_plan(flash.make_request(args, "mqtt://192.168.1.10:1883"), REPO_FIRMWARE,
                                "/dev/ttyUSB0", "given", False, "mqtt://192.168.1.10:1883")
        text = "\n".join(line for step in plan for line in [step.title, *step.lines])
        assert all(f"-> :{dest}" in text for _, dest in lib)
        assert "-> :/main.py" in text


# ---------------------------------------------------------------- seeing it online


@pytest.fixture(params=["embedded", "mosquitto"])
def status_broker(request, tmp_path):
    """A real broker with the gateway's account and one device's."""
    accounts = {"_gateway": "gw-secret", "snow-3": "dev-secret"}
    if request.param == "mosquitto":
        require(mosquitto_available(), "Mosquitto", "sudo apt-get install mosquitto")
        server = MosquittoServer(tmp_path / "mosquitto", accounts)
    else:
        server = EmbeddedBrokerThread(accounts)
    yield server
    server.stop()


def device_says(server, payload: str) -> None:
    publish.single("jisaku/snow-3/status", payload, qos=1, retain=True, hostname="127.0.0.1",
                   port=server.port, client_id="snow-3", auth={"username": "snow-3", "password": "dev-secret"})


def test_the_watch_sees_the_device_come_online_but_not_a_stale_status(status_broker):
    device_says(status_broker, "online")   # left from before the board was reset
    watch = board.StatusWatch("snow-3", status_broker.url, "_gateway", "gw-secret")
    watch.start()
    try:
        assert not watch.wait(1.0), "the retained status from before the reset is not news"
        device_says(status_broker, json.dumps({"fw": "0.1", "ip": "192.168.1.50"}))
        assert watch.wait(10)
    finally:
        watch.stop()


def test_the_watch_says_when_the_broker_is_not_there():
    watch = board.StatusWatch("snow-3", "mqtt://127.0.0.1:1", "_gateway", "x")
    with pytest.raises(board.BoardError, match="cannot reach the broker"):
        watch.start()


def test_a_board_that_never_comes_online_gets_the_usual_causes():
    message = board.NEVER_ONLINE_HELP.format(device_id="snow-3", wait=60, host="192.168.1.10", port=1883,
                                             port_name="/dev/ttyUSB0")
    for cause in ("Wi-Fi name or password", "2.4 GHz", "192.168.1.10:1883", "firewall blocks port 1883",
                  "jisaku gateway", "mpremote connect /dev/ttyUSB0 repl"):
        assert cause in message


def test_several_broker_hosts_go_to_config_json_the_first_preferred(env, firmware, capsys, monkeypatch):
    monkeypatch.setenv("JISAKU_BROKER", "mqtt://127.0.0.1:1884")
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware), "--dry-run",
                          "--broker-host", "192.168.1.23", "192.168.1.24:1883")
    assert code == 0, out
    assert '"broker": "mqtt://192.168.1.23:1884 mqtt://192.168.1.24:1883"' in out
    code, out = flash_cli(capsys, "snow_gauge", "--id", "snow-3", "--firmware", str(firmware), "--dry-run",
                          "--broker-host", "192.168.1.23;192.168.1.24")
    assert code != 0 and "several: --broker-host 192.168.1.10 192.168.1.11" in out
