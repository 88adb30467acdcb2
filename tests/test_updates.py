"""A Pi device downloads, checks and stages an update from the town's server (device/updates.py).

A real town and its dashboard; between the device and the dashboard a small TCP relay that the
test can tell to cut the link after so many bytes, as a flaky LTE link would.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from jisaku.contract.bundles import BundleRefused
from jisaku.device.updates import DownloadFailed, Updates

from .test_bundle_serving import BOARD, BundleTown  # noqa: F401 (the town with keys, accounts and trays)


class CuttingRelay:
    """Relays TCP to ``upstream``; after ``cut_after`` bytes towards the device it drops the link once.

    ``refuse`` makes it drop every connection at once (the server unreachable).
    """

    def __init__(self, upstream: str, cut_after: int | None = None):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cut_after, self.sent, self.cuts, self.refuse = cut_after, 0, 0, False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                device, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse:
                device.close()
                continue
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(device, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, device, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_device: bool) -> None:
        try:
            while data := source.recv(4096):
                if to_device:
                    with self.lock:
                        if self.cut_after is not None and self.sent + len(data) > self.cut_after:
                            data = data[:self.cut_after - self.sent]
                            self.cut_after, self.cuts = None, self.cuts + 1
                            sink.sendall(data)
                            raise ConnectionResetError("the test cuts the link here")
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def published(make_town):
    """A town with printer_tray 1.4.0 published, and tray-1's state folder holding the town's key."""
    town = BundleTown(make_town())
    bundle = town.bundle("1.4.0")
    client, token = town.operator()
    assert town.publish(client, token, bundle.read_bytes()).status_code == 201
    state = town.town.directory / "devices" / "tray-1"
    state.mkdir(parents=True)
    shutil.copy(town.keys.public, state / "bundle-signing.pub")
    return town, bundle, state


def updates_for(town: BundleTown, state: Path, url: str, device: str = "tray-1", **options) -> Updates:
    return Updates(device, town.secrets[device], url, state, kind="printer_tray", runs_on="board",
                   pause_s=0, **options)


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_download_cut_mid_way_resumes_from_where_it_was_and_stages_the_version(published):
    town, bundle, state = published
    size = bundle.stat().st_size
    relay = CuttingRelay(town.url, cut_after=size // 2)
    try:
        updates = updates_for(town, state, relay.url, piece_bytes=1024)
        folder = updates.stage("1.4.0")
    finally:
        relay.close()
    assert relay.cuts == 1 and len(updates.resumed_at) == 1
    # It went on from what it had (more than a few pieces in), not from the start.
    assert updates.resumed_at[0] > 2048
    assert folder == state / "app" / "1.4.0"
    for path in ("main.py", "tray.py", "config.example.json"):
        assert (folder / path).read_bytes() == (BOARD / path).read_bytes()
    assert not (state / "updates" / "1.4.0.part").exists()
    assert updates.stage("1.4.0") == folder  # staged once; asked again, nothing is fetched


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_link_that_stays_down_keeps_what_came_for_the_next_try(published):
    town, bundle, state = published
    relay = CuttingRelay(town.url, cut_after=3000)
    updates = updates_for(town, state, relay.url, piece_bytes=1024, tries=1)
    try:
        with pytest.raises(DownloadFailed, match="bytes are kept and the next try goes on from there"):
            updates.stage("1.4.0")
        kept = (state / "updates" / "1.4.0.part").stat().st_size
        assert 0 < kept <= 3000
        relay.refuse = True
        with pytest.raises(DownloadFailed):
            updates.stage("1.4.0")
        assert (state / "updates" / "1.4.0.part").stat().st_size == kept
        relay.refuse = False
        assert updates.stage("1.4.0").is_dir()
    finally:
        relay.close()


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_corrupted_download_or_a_wrong_key_is_refused_and_nothing_is_staged(published, tmp_path):
    town, bundle, state = published
    updates = updates_for(town, state, town.url)
    # A download that arrived damaged (a bit flipped on the way, or on the SD card).
    data = bytearray(bundle.read_bytes())
    data[-7] ^= 0x04
    (state / "updates").mkdir()
    (state / "updates" / "1.4.0.part").write_bytes(bytes(data))
    with pytest.raises(BundleRefused, match="do not match the hash"):
        updates.stage("1.4.0")
    assert not (state / "app" / "1.4.0").exists()
    assert not (state / "updates" / "1.4.0.part").exists()  # the next try starts afresh
    # A device set up with another town's key refuses the town's real bundle.
    (state / "bundle-signing.pub").write_text("ab" * 32 + "\n")
    with pytest.raises(BundleRefused, match="but this device trusts key"):
        updates.stage("1.4.0")
    assert not (state / "app").exists() or not any((state / "app").iterdir())
    # No key at all: with no server to ask, refused; else fetched with the device's secret and pinned.
    (state / "bundle-signing.pub").unlink()
    with pytest.raises(BundleRefused, match="this device has no town key and could not fetch it"):
        updates_for(town, state, "http://127.0.0.1:9").stage("1.4.0")
    assert updates.stage("1.4.0").is_dir()
    assert (state / "bundle-signing.pub").read_text() == town.keys.public.read_text()


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_device_of_another_kind_or_with_a_wrong_secret_gets_nothing(published):
    town, bundle, state = published
    camera = Updates("cam-1", town.secrets["cam-1"], town.url, state, kind="snow_camera", pause_s=0)
    with pytest.raises(BundleRefused, match="404.*no bundle '1.4.0' for snow_camera devices"):
        camera.stage("1.4.0")
    thief = Updates("tray-1", town.secrets["tray-2"], town.url, state, kind="printer_tray", pause_s=0)
    with pytest.raises(BundleRefused, match="401"):
        thief.stage("1.4.0")
    # A Pi that asks for a board's bundle of its own kind refuses to stage it.
    pi = Updates("tray-1", town.secrets["tray-1"], town.url, state, kind="printer_tray", runs_on="pi", pause_s=0)
    with pytest.raises(BundleRefused, match="for boards; this is a printer_tray pi"):
        pi.stage("1.4.0")
