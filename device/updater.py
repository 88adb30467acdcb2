"""A Pi takes an update offer: download, check, switch, and tell the server each step (docs/updates.md).

The link hands every offer that arrives on ``jisaku/<id>/update`` to :meth:`Updater.offer`; the
updater works in its own thread, so the app goes on measuring while a bundle downloads. Each step
goes out as an ``update`` event through the link's outbox (kept on disk, sent when the broker is
there)::

    downloading → verified → switched → (restart) → running          the new version works
                                                  → rolled_back      the supervisor went back
    refused                                                          nothing changed

The same thread first finishes what a restart left open (device/versions.py): a version on trial
is kept once the link is connected and a reading it took was acknowledged (``running``); a
going-back the supervisor did is reported by the restored version once it works (``rolled_back``).

Example::

    updater = Updater(link, updates, Versions(state_dir), config, restart=stop.set)
    link.on_update = updater.offer
    updater.start()
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
from typing import Any, Callable

from jisaku.contract.bundles import VERSION, BundleRefused

from .app_code import AppCode
from .config import DeviceConfig
from .link import DeviceLink
from .updates import JISAKU, DownloadFailed, Updates
from .versions import Versions
from .wheels import install_wheel

log = logging.getLogger(__name__)

DEFAULT_TRIAL_S = 300.0
RETRY_S = (10, 30, 60, 300)      # after a download that failed for want of a link, wait this long, then longer
# Room an update needs on the SD card, as a multiple of the bundle: the download, the unpacked files,
# and for a wheel its installed files. Checked first: a card filled half-way helps no one.
ROOM_FACTOR = 4


class Updater:
    def __init__(self, link: DeviceLink, updates: Updates | None, versions: Versions, config: DeviceConfig,
                 restart: Callable[[], None] | None, retry_s: tuple[float, ...] = RETRY_S):
        self.link, self.updates, self.versions, self.config = link, updates, versions, config
        # Ends this process so the supervisor starts the new version. None: no supervisor (a device
        # run inside another program, as jisaku demo does), so nothing could go back: no updates.
        self.restart = restart
        self.retry_s = retry_s
        self.restarting = False
        self._offer: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{config.id}-updater", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def offer(self, offer: dict[str, Any] | None) -> None:
        """From the link's network thread: the newest offer (None: withdrawn). Returns at once."""
        self._offer = offer
        self._wake.set()

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._settle()
            self._pin_key()
            while not self._stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                offer = self._offer
                if offer is not None and not self._stopping.is_set():
                    self._take(offer)
        except Exception:  # the app must go on measuring whatever happens here
            log.exception("%s: the updater failed; updates wait for the next start", self.config.id)

    def _settle(self) -> None:
        """After a start: keep a version on trial once it works; report a going-back the supervisor did."""
        state = self.versions.load()
        if not state.trial and not state.report:
            return
        while not self.link.reading_delivered.wait(timeout=1):
            if self._stopping.is_set():
                return
        state = self.versions.load()
        if state.trial and self.versions.trial_passed(state.trial["offer"]):
            trial = state.trial
            self._event(trial["offer"], trial["version"], "running")
            log.info("%s: update %s works: it stays", self.config.id, trial["version"])
            self._tidy(trial["part"])
        if state.report:
            report = state.report
            self._event(report["offer"], report["version"], "rolled_back", reason=report["reason"],
                        detail=report["detail"])
            self.versions.reported()

    def _pin_key(self) -> None:
        """Fetch the town's key at the first start, not at the first offer: the sooner it is pinned
        (usually while the device is set up on the town's own network), the smaller the window in
        which someone else's key could be taken for the town's."""
        if self.updates is None or self.restart is None or (self.versions.state_dir / "bundle-signing.pub").exists():
            return  # nothing to check updates with, or (no supervisor) no updates to check
        try:
            self.updates.fetch_public_key()
        except BundleRefused as refused:
            # A town that has not made a key yet (jisaku bundle keygen) simply has no updates: not a fault.
            level = logging.INFO if refused.reason == "no_town_key" else logging.WARNING
            log.log(level, "%s: %s (tried again with the first update offer)", self.config.id, refused)

    def _take(self, offer: dict[str, Any]) -> None:
        number, version, path = offer.get("offer"), offer.get("version"), offer.get("path")
        if type(number) is not int or not isinstance(version, str) or not VERSION.match(version):
            log.warning("%s: ignored an update offer without a whole-number offer and a version: %s",
                        self.config.id, offer)
            return
        state = self.versions.load()
        if number in state.done or version in (state.app, state.jisaku) or state.trial:
            return  # finished before, already running it, or a trial under way (the offer comes again)
        if self.restart is None:
            self._refuse(number, version, "no_supervisor", "this device runs without its supervisor (jisaku"
                         " device run), which is what goes back to the old version if the new one fails: it"
                         " takes no updates")
            return
        if self.updates is None:
            self._refuse(number, version, "no_server", "this device does not know the town's server: set"
                         " [device] server = \"http://…:8000\" in its device.toml, or JISAKU_SERVER")
            return
        if not isinstance(path, str):
            path = None
        size = offer.get("bytes") if type(offer.get("bytes")) is int else 0
        self._event(number, version, "downloading", bytes=size)
        free = shutil.disk_usage(self.versions.state_dir).free
        if free < ROOM_FACTOR * size:
            self._refuse(number, version, "no_space", f"update {version} needs about {ROOM_FACTOR * size:,} bytes"
                         f" free and the SD card has {free:,}: remove old logs or pictures, or use a larger card")
            return
        tries = 0
        while True:
            try:
                folder = self.updates.stage(version, path, offer.get("manifest_sha256"))
                break
            except BundleRefused as refused:
                self._refuse(number, version, refused.reason, str(refused))
                return
            except OSError as err:  # unpacking failed: a full card, or one that is failing
                self._refuse(number, version, "no_space" if err.errno == errno.ENOSPC else "format",
                             f"update {version} could not be unpacked: {err}")
                return
            except DownloadFailed as failed:
                pause = self.retry_s[min(tries, len(self.retry_s) - 1)]
                log.warning("%s: %s; trying again in %g s", self.config.id, failed, pause)
                tries += 1
                if self._stopping.wait(pause) or self._offer is not offer:
                    return  # stopping, or another offer (or none) meanwhile
        self._event(number, version, "verified")
        # The offer's path said which it is, and the signed manifest agreed (stage() checked it).
        part = "jisaku" if self.updates.kind_of(path) == JISAKU else "app"
        try:
            if part == "jisaku":
                install_wheel(folder)
            else:
                AppCode(self.config, folder).check()
        except BundleRefused as refused:
            self._refuse(number, version, refused.reason, str(refused))
            return
        except ValueError as err:  # DeviceConfigError, KindError: the bundle cannot run this device
            self._refuse(number, version, "app", str(err))
            return
        if self._offer is not offer or self._stopping.is_set():
            return
        before = self.versions.load().running(part)
        trial_s = offer.get("trial_s")
        trial_s = float(trial_s) if isinstance(trial_s, (int, float)) and trial_s > 0 else DEFAULT_TRIAL_S
        # The event first, then the switch: a power cut between them switches again at the next
        # start (the offer is retained), where the other order could switch without a word.
        self._event(number, version, "switched", **{"from": before or "installed"})
        self.versions.switch(part, version, number, trial_s)
        log.info("%s: switched %s from %s to %s; restarting into it (trial %g s)", self.config.id, part,
                 before or "the installed one", version, trial_s)
        self.restarting = True
        self.restart()

    def _refuse(self, number: int, version: str, reason: str, detail: str) -> None:
        log.warning("%s: refused update %s: %s", self.config.id, version, detail)
        self._event(number, version, "refused", reason=reason, detail=detail)
        self.versions.finish(number)

    def _event(self, number: int, version: str, state: str, **extra: Any) -> None:
        values = {"offer": number, "version": version, "state": state, **extra}
        self.link.publish_event("update", {key: value[:256] if isinstance(value, str) else value
                                           for key, value in values.items()})

    def _tidy(self, part: str) -> None:
        """Keep the version running and the one before; older staged versions only fill the SD card."""
        state = self.versions.load()
        keep = {state.running(part), getattr(state, f"{part}_before")}
        folder = self.versions.state_dir / ("app" if part == "app" else JISAKU)
        for old in folder.iterdir() if folder.is_dir() else ():
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
