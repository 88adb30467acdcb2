"""A Pi fetches an update bundle in pieces, checks it, and unpacks it beside the version it runs.

This is the first half of an update: download, verify, stage. Switching to the staged version,
the trial after the switch and going back are in device/updater.py and device/supervisor.py.

In the device's state folder::

    bundle-signing.pub          the town's public key: fetched once from the town's server and kept
                                (trust on first use, see :meth:`Updates.public_key`), or copied by hand
    updates/<version>.part      a download under way; a dropped link resumes from its size
    app/<version>/              each staged app version, whole and checked; older ones are kept
    jisaku/<version>/           each staged jisaku wheel (a bundle of kind ``jisaku``, device/wheels.py)

Every piece is one HTTP Range request with the device's own id and secret (docs/updates.md),
so the download needs no more memory than one piece, and a link that drops costs at most the
piece it dropped in: the bytes already on disk are asked for no more.

Only the standard library (urllib) and jisaku.contract are used; the signature check needs the
cryptography package, which ``pip install jisaku`` brings.

Example::

    updates = Updates("tray-1", secret, "http://192.168.1.10:8000", Path("state/tray-1"), kind="printer_tray")
    folder = updates.stage("1.4.0")      # app/1.4.0, verified; BundleRefused if it must not be installed
    updates.stage("0.5", path="/api/v1/devices/tray-1/bundles/0.5?kind=jisaku")    # jisaku/0.5
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from jisaku.contract.bundles import (MAX_BUNDLE_BYTES, VERSION, BundleRefused, public_key_from_text, read_header,
                                     unpack_bundle, verify_bundle)

log = logging.getLogger(__name__)

PUBLIC_KEY = "bundle-signing.pub"
PIECE_BYTES = 64 * 1024      # a Pi has memory to spare; a board would ask for ~4 kB at a time
TRIES = 5                    # link drops within one stage() before it gives up (and keeps what it has)
PAUSE_S = 1.0                # between tries: a link that just dropped often needs a moment
TIMEOUT_S = 30.0
JISAKU = "jisaku"            # the kind of a bundle that holds the jisaku package itself (one .whl)


class DownloadFailed(RuntimeError):
    """The bundle could not be fetched now (no link, server away); what arrived is kept for next time."""


class Updates:
    def __init__(self, device_id: str, secret: str, server_url: str, state_dir: Path, kind: str,
                 runs_on: str = "pi", piece_bytes: int = PIECE_BYTES, tries: int = TRIES,
                 pause_s: float = PAUSE_S, timeout_s: float = TIMEOUT_S):
        self.kind, self.runs_on = kind, runs_on
        self.state_dir = Path(state_dir)
        self.piece_bytes, self.tries, self.pause_s, self.timeout_s = piece_bytes, tries, pause_s, timeout_s
        self.server_url = server_url.rstrip("/")
        self.url = f"{self.server_url}/api/v1/devices/{urllib.parse.quote(device_id)}/bundles/"
        self.key_url = f"{self.server_url}/api/v1/devices/{urllib.parse.quote(device_id)}/bundle-key"
        # Built once and never logged: it carries the secret.
        self._authorization = "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()
        self.resumed_at: list[int] = []  # where each download went on after a dropped link (for logs, tests)

    @property
    def downloads(self) -> Path:
        return self.state_dir / "updates"

    @property
    def apps(self) -> Path:
        return self.state_dir / "app"

    def public_key(self) -> bytes:
        """The town's public key: the pinned file, else fetched from the town's server once and pinned.

        Trust on first use: the first answer is kept and never replaced by the software, so a
        server (or someone on the network) that later offers another key is not believed. To move
        a device to a new town key, delete its bundle-signing.pub by hand.
        """
        path = self.state_dir / PUBLIC_KEY
        if not path.exists():
            self.fetch_public_key()
        return public_key_from_text(path.read_text(encoding="ascii"))

    def fetch_public_key(self) -> Path:
        """Ask the town's server for its public key (with the device's own id and secret) and pin it."""
        path = self.state_dir / PUBLIC_KEY
        request = urllib.request.Request(self.key_url, headers={"Authorization": self._authorization})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                text = answer.read(200).decode("ascii", "replace")
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise BundleRefused("key", f"this device has no town key and could not fetch it from"
                                           f" {self.key_url} ({err}): copy the server's data/keys/{PUBLIC_KEY}"
                                           f" to {path}") from None
            raise BundleRefused("no_town_key", f"the town's server has no bundle key yet, so there are no updates"
                                               f" (jisaku bundle keygen on the server makes one)") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise BundleRefused("key", f"this device has no town key and could not fetch it from {self.key_url}"
                                       f" ({err}): copy the server's data/keys/{PUBLIC_KEY} to {path}") from None
        public_key_from_text(text)  # BundleRefused("key") if the answer is not a key
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(PUBLIC_KEY + ".tmp")
        temporary.write_text(text.strip() + "\n", encoding="ascii")
        os.replace(temporary, path)
        log.info("pinned the town's key from %s in %s", self.key_url, path)
        return path

    # ------------------------------------------------------------ download

    def download(self, version: str, path: str | None = None) -> Path:
        """The whole bundle ``version`` on disk (not yet checked); resumes a download under way.

        Raises :class:`DownloadFailed` after ``tries`` dropped links (the part fetched stays),
        :class:`BundleRefused` when the server has no such bundle for this device's kind.
        """
        if not VERSION.match(version):
            raise BundleRefused("format", f"{version!r} is not a bundle version")
        self.downloads.mkdir(parents=True, exist_ok=True)
        url = self.server_url + path if path else self.url + urllib.parse.quote(version)
        part = self.downloads / (f"{version}.part" if self.kind_of(path) != JISAKU else f"{JISAKU}-{version}.part")
        part.touch()
        for attempt in range(self.tries):
            if attempt:
                self.resumed_at.append(part.stat().st_size)
                log.info("update %s: link dropped, going on from byte %d", version, part.stat().st_size)
                time.sleep(self.pause_s)
            try:
                self._fetch_pieces(version, url, part)
                return part
            except BundleRefused:
                if not part.stat().st_size:
                    part.unlink()  # nothing to resume: leave no empty file behind
                raise
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                reason = err
        raise DownloadFailed(f"update {version}: no link to the server after {self.tries} tries ({reason});"
                             f" {part.stat().st_size:,} bytes are kept and the next try goes on from there")

    def _fetch_pieces(self, version: str, url: str, part: Path) -> None:
        total = None
        while total is None or part.stat().st_size < total:
            offset = part.stat().st_size
            request = urllib.request.Request(url, headers={
                "Authorization": self._authorization,
                "Range": f"bytes={offset}-{offset + self.piece_bytes - 1}"})
            try:
                answer = urllib.request.urlopen(request, timeout=self.timeout_s)
            except urllib.error.HTTPError as err:
                if err.code == 416 and offset:  # we have it all already (the last piece ended the file)
                    return
                if err.code in (401, 404):
                    detail = err.read(2000).decode("utf-8", "replace")
                    raise BundleRefused("missing", f"update {version}: the server says {err.code}: {detail}") from None
                raise
            with answer:
                total = self._total(answer, offset, part)
                if total > MAX_BUNDLE_BYTES:
                    raise BundleRefused("size", f"update {version} is {total:,} bytes, more than the"
                                                f" {MAX_BUNDLE_BYTES:,} allowed")
                # Written as it arrives, in small reads: a link that drops mid-piece keeps what came.
                with open(part, "ab") as out:
                    while piece := answer.read(16 * 1024):
                        out.write(piece)
                        out.flush()
                    os.fsync(out.fileno())
                # urllib ends a body that stopped early without a word: bytes still owed mean a dropped link.
                if answer.length:
                    raise http.client.IncompleteRead(b"", answer.length)

    @staticmethod
    def _total(answer, offset: int, part: Path) -> int:
        """The bundle's whole size from a 206's Content-Range; a 200 means start again from byte 0."""
        if answer.status == 200:  # the server ignored Range: what it sends is the whole file
            part.write_bytes(b"")
            return int(answer.headers.get("Content-Length", "0"))
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", answer.headers.get("Content-Range", ""))
        if answer.status != 206 or not match or int(match.group(1)) != offset:
            raise http.client.HTTPException(f"unexpected answer {answer.status} to a Range request")
        return int(match.group(3))

    # ------------------------------------------------------------ stage

    @staticmethod
    def kind_of(path: str | None) -> str | None:
        """``jisaku`` for the path of a jisaku wheel bundle (``…?kind=jisaku``); None for the device's own kind."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path or "").query)
        return JISAKU if query.get("kind") == [JISAKU] else None

    def folder_for(self, version: str, kind: str) -> Path:
        """Where version ``version`` of ``kind`` is staged: ``app/<version>``, or ``jisaku/<version>`` for jisaku."""
        return (self.state_dir / JISAKU if kind == JISAKU else self.apps) / version

    def staged(self, version: str, path: str | None = None) -> Path | None:
        """The folder of ``version`` if it was staged before (a power cut between staging and switching)."""
        folder = self.folder_for(version, self.kind_of(path) or self.kind)
        return folder if folder.is_dir() else None

    def stage(self, version: str, path: str | None = None, manifest_sha256: str | None = None) -> Path:
        """Download, check and unpack bundle ``version`` into ``app/<version>``; that folder.

        ``path`` is the offer's download path (relative to the server); None: this device's kind's
        bundle. The bundle is this device's kind (staged in ``app/<version>``), or, with ``?kind=jisaku``
        in the path, ``jisaku``: a wheel of jisaku itself (staged in ``jisaku/<version>``); its signed
        manifest must say the same. ``manifest_sha256``, from the offer, must match too.

        The running version's folder is not touched, nor are older ones. A bundle that fails a
        check is deleted (so the next try downloads it afresh) and :class:`BundleRefused` says why.
        """
        if path is not None and not (path.startswith("/") and "//" not in path):
            raise BundleRefused("path", f"the offer's path {path!r} is not a path on the town's server")
        before = self.staged(version, path)
        if before is not None:
            return before
        kind = self.kind_of(path) or self.kind
        key = self.public_key()
        part = self.download(version, path)
        try:
            manifest = verify_bundle(part, key)
            if (manifest.kind, manifest.version, manifest.runs_on) != (kind, version, self.runs_on):
                raise BundleRefused("kind", f"update {version} is {manifest.kind} {manifest.version} for"
                                            f" {manifest.runs_on}s; this is a {kind} {self.runs_on}")
            if manifest_sha256 is not None:
                with open(part, "rb") as stream:
                    found = hashlib.sha256(read_header(stream).manifest_bytes).hexdigest()
                if found != manifest_sha256:
                    raise BundleRefused("hash", f"update {version}: the bundle's manifest is not the one offered"
                                                " (manifest_sha256 differs): the server offered one bundle and served another")
        except BundleRefused:
            part.unlink(missing_ok=True)
            raise
        target = self.folder_for(version, manifest.kind)
        # Unpacked beside the target first, then renamed: a power cut leaves no half version.
        unpacking = target.parent / f".{version}.unpacking"
        shutil.rmtree(unpacking, ignore_errors=True)
        unpack_bundle(part, manifest, unpacking)
        unpacking.rename(target)
        part.unlink()
        log.info("update %s staged in %s (%d files, signed with key %s)", version, target, len(manifest.files),
                 manifest.key_id)
        return target
