"""Downloading, checking and switching to a new version of the app, at a board's start.

versions.py imports this only when an offer waits in ``/update/offer.json``, before the
app is loaded, so the whole heap is free for it; the app's steady loop never carries it.

What it does with an offer (docs/updates.md, "On a board"):

1. Checks the offer and ``config.json``'s ``"server"`` (without it: refused, ``no_server``).
2. Fetches the bundle's header and manifest with HTTP Range requests (the device's id and
   secret as HTTP Basic) and checks SHA-256(manifest) == the offer's ``manifest_sha256``.
   The offer came over the board's own MQTT link, which only the gateway may write, and the
   gateway offers only bundles whose Ed25519 signature it checked: the manifest's hash is
   what ties the download to that signature, since a board cannot check Ed25519 cheaply.
3. Downloads every file in pieces of PIECE bytes straight into ``/app/<version>/``, hashing
   as it goes; after a dropped link it goes on from what is on flash, not from the start.
   Every file's size and SHA-256 must match the manifest.
4. Switches: one atomic write of ``/app/state.json`` (see versions.py), then a restart
   into the new version on trial.

Anything wrong (a hash, the size, no room, a bad file name, a bundle for a Pi) is refused
with the reason, reported as an ``update`` event, and the board goes on with its version.

Example (what versions.start does)::

    import updater
    updater.install({"offer": 12, "version": "1.4.0", "bytes": 23110, "manifest_sha256": "...",
                     "path": "/api/v1/devices/snow-1/bundles/1.4.0", "trial_s": 300}, versions.read_state())
"""

import binascii
import hashlib
import json
import os
import socket

import clock
import config
import machine
import versions

PIECE = 4096                 # bytes per Range request: few requests, read CHUNK at a time
CHUNK = 512                  # bytes read from the socket at a time
HEADER_BYTES = 300           # "jisaku-bundle 1", the signature and the manifest length fit in this
MAX_MANIFEST = 16 * 1024
MAX_BUNDLE = 1024 * 1024     # a board's flash has ~1.5 MB for files; a board's app is some 30 kB
SPARE_BYTES = 16 * 1024      # left free on flash after the download, for the outbox and settings
TIMEOUT_S = 5                # below the watchdog's 8 s
TRIES_PER_START = 4          # dropped links survived in one start, each going on where it was
STARTS_TO_DOWNLOAD = 5       # starts that may fail to download before the offer is refused
MAGIC = b"jisaku-bundle 1\n"
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


class Refused(Exception):
    """This offer will not be installed: ``reason`` (a word) and ``detail`` (a sentence)."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class NotNow(Exception):
    """The download could not finish in this start (no network, server away): try later."""


# ---------------------------------------------------------------- the whole update


def install(offer, state):
    """Download, check and switch to ``offer``; returns only when the board keeps its version."""
    if not isinstance(offer, dict) or offer.get("offer") in state["done"] or offer.get("version") == state["active"]:
        versions.remove_tree("/update")  # finished already (a power cut came before these files went)
        return
    watchdog = machine.WDT(timeout=8000)
    try:
        check_offer(offer)
        boot = config.load()
        server = boot.get("server")
        if not server:
            raise Refused("no_server", 'config.json has no "server" (the dashboard\'s address, e.g.'
                                       ' http://192.168.1.10:8000): run jisaku flash with --server')
        stage = versions.folder_of(offer["version"])
        make_room(state, offer)
        versions.report("downloading", offer, {"bytes": offer["bytes"]})
        download = Download(server, offer, boot, watchdog)
        join_wifi(boot, watchdog)
        manifest = download.run(stage)
    except Refused as refused:
        refuse(offer, state, refused)
        return
    except (OSError, NotNow, ValueError) as err:
        retry_later(offer, state, err)
        return
    versions.report("verified", offer)
    switch(offer, state)


def check_offer(offer):
    version = offer.get("version")
    if not name_ok(version, ".+-", 64):
        raise Refused("format", "the offer's version %r is not letters, digits and . _ + -" % (version,))
    for key in ("offer", "bytes"):
        if not isinstance(offer.get(key), int) or isinstance(offer.get(key), bool):
            raise Refused("format", "the offer's %s is not a whole number" % key)
    digest = offer.get("manifest_sha256")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise Refused("format", "the offer's manifest_sha256 is not 64 hex digits")
    if not isinstance(offer.get("path"), str) or not offer["path"].startswith("/"):
        raise Refused("format", "the offer's path must start with /")
    trial_s = offer.get("trial_s", versions.DEFAULT_TRIAL_S)
    if not isinstance(trial_s, (int, float)) or isinstance(trial_s, bool) or trial_s <= 0:
        raise Refused("format", "the offer's trial_s is not a number of seconds")
    if offer["bytes"] > MAX_BUNDLE:
        raise Refused("size", "the bundle is %d bytes; a board takes at most %d" % (offer["bytes"], MAX_BUNDLE))


def name_ok(name, also, longest):
    """A file or version name: letters, digits, _ and ``also``; not starting with . (no '..', hidden)."""
    if not isinstance(name, str) or not 0 < len(name) <= longest or name[0] not in NAME_CHARS:
        return False
    return all(c in NAME_CHARS or c in also for c in name)


def make_room(state, offer):
    """Delete versions no longer needed (not the running one), then check the flash has room."""
    keep = (state["active"], offer["version"])
    if state["previous"] not in keep:
        state["previous"] = None
        versions.write_state(state)  # the pointer first: never name a folder being deleted
    if versions.is_folder("/app"):
        for name in os.listdir("/app"):
            if versions.is_folder("/app/" + name) and name not in keep:
                versions.remove_tree("/app/" + name)
    stat = os.statvfs("/")
    free = stat[0] * stat[4]
    if offer["bytes"] + SPARE_BYTES > free:
        raise Refused("no_space", "the bundle needs %d bytes and %d more to spare; the flash has %d free"
                                  % (offer["bytes"], SPARE_BYTES, free))


def refuse(offer, state, refused):
    versions.report("refused", offer, {"reason": refused.reason, "detail": refused.detail[:256]})
    versions.finish(state, offer["offer"])
    versions.write_state(state)
    if offer.get("version") not in (state["active"], state["previous"]) and name_ok(offer.get("version"), ".+-", 64):
        versions.remove_tree(versions.folder_of(offer["version"]))  # a refused download is not kept
    versions.remove_tree("/update")


def retry_later(offer, state, err):
    """The network failed: the offer waits for a later start (the retained offer brings one)."""
    offer["starts"] = offer.get("starts", 0) + 1
    print("jisaku: update %s not downloaded this time (%r)" % (offer["offer"], err))
    if offer["starts"] >= STARTS_TO_DOWNLOAD:
        refuse(offer, state, Refused("download", "could not download the bundle in %d starts (%r): check"
                                                 " config.json's server and that the board reaches it"
                                                 % (STARTS_TO_DOWNLOAD, err)))
    else:
        versions.write_json(versions.OFFER, offer)


def switch(offer, state):
    """Make the new version the one that starts (one atomic write), then restart into it."""
    came_from = state["active"]
    versions.report("switched", offer, {"from": came_from or ""})   # "": the installed version
    state["previous"] = came_from
    state["active"] = offer["version"]
    state["trial"] = {"offer": offer["offer"], "version": offer["version"], "from": came_from,
                      "trial_s": offer.get("trial_s") or versions.DEFAULT_TRIAL_S, "starts": 0}
    versions.write_state(state)    # THE switch: before it the old version starts, after it the new
    versions.remove_tree("/update")
    print("jisaku: switched to version %s; restarting into it" % offer["version"])
    machine.reset()


def join_wifi(boot, watchdog, wait_ms=20000):
    import network
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return
    wlan.connect(boot["wifi"]["ssid"], boot["wifi"]["password"])
    since = clock.ticks_ms()
    while not wlan.isconnected():
        if clock.elapsed_ms(since) > wait_ms:
            raise NotNow("Wi-Fi %r not joined" % boot["wifi"]["ssid"])
        watchdog.feed()
        clock.sleep_ms(200)


# ---------------------------------------------------------------- the download


class Download:
    """One bundle, fetched in pieces with HTTP Range from the town's server."""

    def __init__(self, server, offer, boot, watchdog):
        address = server.split("://", 1)[-1].split("/", 1)[0]
        self.host, _, port = address.partition(":")
        self.port = int(port or 80)
        self.address = None          # looked up once, at the first request
        self.path = offer["path"]
        self.offer = offer
        self.auth = binascii.b2a_base64(("%s:%s" % (boot["device_id"], boot["secret"])).encode()).strip()
        self.watchdog = watchdog
        self.buffer = memoryview(bytearray(CHUNK))   # every piece passes through this one buffer
        self.tries = TRIES_PER_START
        self.total = None            # the bundle's size, as the server's Content-Range says
        self.length = None           # the bytes the server's answer carries

    def run(self, stage):
        """Every file into ``stage``, checked; returns the manifest."""
        header = self.get_all(0, HEADER_BYTES)
        files_at, length = read_header(header)
        manifest = self.manifest(files_at - length, length)
        total = files_at
        for entry in manifest["files"]:
            total += entry["size"]
        if total != self.offer["bytes"] or total != self.total:
            raise Refused("size", "the bundle is %d bytes by its manifest, but the offer says %d and the server %d"
                                  % (total, self.offer["bytes"], self.total))
        start = files_at
        for entry in manifest["files"]:
            self.file(stage, entry, start)
            start += entry["size"]
        remove_extra_files(stage, manifest)
        return manifest

    def manifest(self, at, length):
        """The manifest, once its SHA-256 is the one in the offer; kept on flash for a later start."""
        if length > MAX_MANIFEST:
            raise Refused("size", "the manifest is %d bytes; a board takes at most %d" % (length, MAX_MANIFEST))
        path = "/update/manifest.json"
        if sha256_of_file(path, length) != self.offer["manifest_sha256"]:
            versions.remove_tree(path)
            self.to_file(path, at, length)
            if sha256_of_file(path, length) != self.offer["manifest_sha256"]:
                versions.remove_tree(path)
                raise Refused("hash", "the manifest's SHA-256 is not the one in the offer: the download was"
                                      " damaged or changed on the way. The board keeps its version")
        try:
            with open(path) as f:
                manifest = json.load(f)
        except ValueError:
            raise Refused("format", "the manifest is not JSON, though its hash matched: the server's bundle is wrong")
        check_manifest(manifest, self.offer)
        return manifest

    def file(self, stage, entry, at):
        path = stage + "/" + entry["path"]
        versions.make_folders(path.rsplit("/", 1)[0])
        have = file_size(path)
        if have > entry["size"]:
            os.remove(path)
        self.to_file(path, at, entry["size"])
        if sha256_of_file(path, entry["size"]) != entry["sha256"]:
            os.remove(path)
            raise Refused("hash", "%s: its bytes do not match the SHA-256 in the manifest: damaged or changed"
                                  " on the way. The board keeps its version" % entry["path"])

    def to_file(self, path, at, size):
        """Bytes ``at`` .. ``at + size`` of the bundle appended to ``path`` (going on from what it has)."""
        versions.make_folders(path.rsplit("/", 1)[0])
        while True:
            have = file_size(path)
            if have >= size:
                return
            try:
                with open(path, "ab") as out:
                    self.get(at + have, min(size - have, PIECE), out.write)
            except (OSError, NotNow) as err:
                self.tries -= 1
                if self.tries <= 0:
                    raise NotNow("link dropped too often (%r)" % (err,))
                print("jisaku: download interrupted (%r); going on from byte %d" % (err, at + file_size(path)))

    def get_all(self, at, size):
        """A small piece in memory (the header)."""
        parts = []
        self.get(at, size, lambda data: parts.append(bytes(data)))
        return b"".join(parts)

    def get(self, at, size, sink):
        """One HTTP Range request: bytes ``at`` .. ``at + size - 1`` handed to ``sink`` as they come."""
        self.watchdog.feed()
        sock = socket.socket()
        try:
            sock.settimeout(TIMEOUT_S)
            if self.address is None:
                self.address = socket.getaddrinfo(self.host, self.port)[0][-1]
            sock.connect(self.address)
            # HTTP/1.0: the server closes when done and never sends "chunked" pieces.
            sock.write(("GET %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Basic %s\r\nRange: bytes=%d-%d\r\n\r\n"
                        % (self.path, self.host, self.auth.decode(), at, at + size - 1)).encode())
            self.answer_head(sock)
            left = min(size, self.length) if self.length is not None else size
            while left > 0:
                count = sock.readinto(self.buffer, min(left, CHUNK))
                if not count:
                    raise NotNow("the server closed the connection early")
                sink(self.buffer[:count])
                left -= count
                self.watchdog.feed()
        finally:
            sock.close()

    def answer_head(self, sock):
        """Reads the status line and headers; notes the bundle's whole size from Content-Range."""
        self.length = None
        status = sock.readline()              # b"HTTP/1.1 206 Partial Content\r\n"
        code = int(status[9:12]) if status[:5] == b"HTTP/" and status[9:12].isdigit() else 0
        while True:
            line = sock.readline()
            if len(line) <= 2:                # the empty line before the body
                break
            start = line[:15].lower()
            if start[:14] == b"content-range:":   # bytes 0-2047/23110: the whole size after /
                self.total = int(line[line.index(b"/") + 1:].strip())
            elif start == b"content-length:":
                self.length = int(line[15:].strip())
        if code == 206:
            return
        if code == 401:
            raise Refused("download", "the server refused this device's id and secret (401): is config.json's"
                                      " secret the one the server has for this device?")
        if code == 404:
            raise Refused("download", "the server has no bundle at %s (404)" % self.path)
        if code == 416:
            raise Refused("size", "the server's bundle is shorter than the offer says (416)")
        raise NotNow("the server answered %d" % code)


# ---------------------------------------------------------------- checks


def read_header(data):
    """``(where the files begin, the manifest's length)`` from the bundle's first bytes."""
    if not data.startswith(MAGIC):
        raise Refused("format", "this is not a jisaku bundle (it does not start with 'jisaku-bundle 1')")
    lines = data[len(MAGIC):].split(b"\n", 2)
    if len(lines) < 3 or len(lines[0]) != 128 or not lines[1].isdigit():
        raise Refused("format", "this is not a jisaku bundle (no signature or manifest length)")
    length = int(lines[1])
    return len(MAGIC) + len(lines[0]) + len(lines[1]) + 2 + length, length


def check_manifest(manifest, offer):
    if not isinstance(manifest, dict) or manifest.get("format") != 1 or not isinstance(manifest.get("files"), list):
        raise Refused("format", "the manifest is not a format 1 jisaku manifest: update the board's jisaku")
    if manifest.get("runs_on") != "board":
        raise Refused("kind", "this bundle is for %r, not for a MicroPython board" % (manifest.get("runs_on"),))
    if manifest.get("version") != offer["version"]:
        raise Refused("format", "the manifest is version %r, the offer %r" % (manifest.get("version"), offer["version"]))
    seen = []
    for entry in manifest["files"]:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not all(name_ok(part, ".-", 100) for part in path.split("/")):
            raise Refused("path", "the file name %r could write outside the version's folder: refused" % (path,))
        if path.lower() in seen:
            raise Refused("path", "%s is in the bundle twice" % path)
        seen.append(path.lower())
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(entry.get("sha256"), str):
            raise Refused("format", "%s: the manifest's size or sha256 is not valid" % path)
    if "main.py" not in seen:
        raise Refused("format", "the bundle has no main.py: a board would not know how to start it")


def remove_extra_files(stage, manifest, folder=""):
    """Files in the version's folder that the manifest does not list (left from an older copy) go."""
    wanted = [entry["path"] for entry in manifest["files"]]
    for name in os.listdir(stage + folder):
        relative = (folder + "/" + name)[1:]
        if versions.is_folder(stage + folder + "/" + name):
            if any(path.startswith(relative + "/") for path in wanted):
                remove_extra_files(stage, manifest, folder + "/" + name)
            else:
                versions.remove_tree(stage + folder + "/" + name)
        elif relative not in wanted:
            os.remove(stage + folder + "/" + name)


def file_size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def sha256_of_file(path, size):
    """The SHA-256 (hex) of the file's first ``size`` bytes; None if it is shorter or missing."""
    if file_size(path) < size:
        return None
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(CHUNK))   # a slice of a memoryview copies nothing
    left = size
    with open(path, "rb") as f:
        while left > 0:
            count = f.readinto(buffer)
            if not count:
                return None
            digest.update(buffer[:min(count, left)])
            left -= count
    return binascii.hexlify(digest.digest()).decode()
