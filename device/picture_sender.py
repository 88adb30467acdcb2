"""Sends the picture outbox to the town's server over HTTP, oldest first, in the background.

The contract is in docs/protocol.md, "## Pictures": one ``POST`` per picture to
``/api/v1/devices/<id>/pictures?ts=&seq=`` with the device's own id and secret
(HTTP Basic). The server answers only after the picture is safe on its disk, so a
picture is forgotten here only then. What each answer means to the device:

    201, 200 (stored, or stored before)   forget it
    400, 413, 415, 422 (refused)          forget it, count it as refused, log the reason
    401 (wrong id or secret)              keep it, try again later
    5xx, no answer, anything else         keep it, try again after a growing pause (up to half a minute)

Only the standard library (urllib) is used, so a Pi needs nothing more.

Example::

    outbox = PictureOutbox(Path("data/devices/cam-1/pictures"))
    sender = PictureSender("cam-1", secret, "http://192.168.1.10:8000", outbox)
    sender.start()
    outbox.put(jpeg_bytes, "image/jpeg", ts=time.time()); sender.wake()
    sender.stop()
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import urllib.error
import urllib.parse
import urllib.request

from .picture_outbox import Picture, PictureOutbox

log = logging.getLogger(__name__)

REFUSED = {400, 413, 415, 422}   # the server will never take this picture: sending it again cannot help
FIRST_PAUSE_S = 1.0              # after a failure, wait this long, then twice as long each time...
MAX_PAUSE_S = 30.0               # ...up to this: a server back after hours gets the pictures within it
UPLOAD_TIMEOUT_S = 30.0          # a 200 kB picture over a weak LTE link takes a few seconds


class PictureSender:
    """A background thread that uploads ``outbox``'s pictures to ``server_url``.

    ``sent`` counts pictures the server stored; the outbox keeps ``refused`` and ``dropped``.
    """

    def __init__(self, device_id: str, secret: str, server_url: str, outbox: PictureOutbox,
                 timeout_s: float = UPLOAD_TIMEOUT_S):
        self.device_id = device_id
        self.outbox = outbox
        self.timeout_s = timeout_s
        self.url = f"{server_url.rstrip('/')}/api/v1/devices/{urllib.parse.quote(device_id)}/pictures"
        # Built once and never logged: it carries the secret.
        self._authorization = "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()
        self.sent = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{device_id}-pictures", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A new picture is waiting: send it now rather than at the next look."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sending; what is not sent stays in the outbox for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    # ------------------------------------------------------------ the thread

    def _loop(self) -> None:
        pause = 0.0
        while not self._stopping.is_set():
            picture = self.outbox.oldest()
            if picture is None:
                self._wake.wait(timeout=10)
                self._wake.clear()
                continue
            if self.send(picture):
                pause = 0.0
                continue
            # Wait longer after each failure, a little differently on every device, so a
            # hundred cameras do not all knock at once when the server comes back.
            pause = min(MAX_PAUSE_S, max(FIRST_PAUSE_S, pause * 2))
            self._stopping.wait(pause * random.uniform(0.8, 1.2))

    def send(self, picture: Picture) -> bool:
        """Upload one picture; True when it is done with (stored or refused), False to try again later."""
        try:
            data = picture.read()
        except OSError as err:  # the file went (the outbox dropped it while full): nothing to send
            log.warning("%s: picture %d is gone from the outbox: %s", self.device_id, picture.seq, err)
            self.outbox.remove(picture.seq)
            return True
        request = urllib.request.Request(self._address(picture), data=data, method="POST", headers={
            "Authorization": self._authorization, "Content-Type": picture.content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                status = answer.status
        except urllib.error.HTTPError as err:
            return self._refused_or_kept(picture, err.code, _reason(err))
        except (urllib.error.URLError, OSError) as err:  # no answer: refused connection, timeout, no route
            log.warning("%s: the server at %s did not answer (%s); picture %d waits (the address comes from"
                        " [device] server in device.toml, else JISAKU_SERVER, else the http setting)",
                        self.device_id, self.url, getattr(err, "reason", err), picture.seq)
            return False
        if status in (200, 201):
            self.outbox.remove(picture.seq)
            self.sent += 1
            return True
        log.warning("%s: unexpected answer %d to picture %d; it waits", self.device_id, status, picture.seq)
        return False

    def _refused_or_kept(self, picture: Picture, status: int, reason: str) -> bool:
        if status in REFUSED:
            log.error("%s: the server refused picture %d (%d: %s); it is dropped",
                      self.device_id, picture.seq, status, reason)
            self.outbox.remove(picture.seq)
            self.outbox.count_refused()
            return True
        if status == 401:
            log.error("%s: the server at %s does not accept this device id and secret; pictures wait"
                      " (check JISAKU_DEVICE_SECRET, or register the device: jisaku devices add)",
                      self.device_id, self.url)
        else:
            log.warning("%s: the server answered %d (%s) to picture %d; it waits",
                        self.device_id, status, reason, picture.seq)
        return False

    def _address(self, picture: Picture) -> str:
        """The upload URL with ``ts`` (or ``age`` when the device had no clock) and ``seq``."""
        query: dict[str, str | int] = {}
        if picture.ts is not None:
            query["ts"] = f"{picture.ts:.3f}"
        elif picture.age_s() is not None:
            query["age"] = f"{picture.age_s():.1f}"
        # With neither (no clock, and rebooted since it was taken) the time is unknown: it is
        # sent without one and the server decides (the contract lets it refuse such a picture).
        query["seq"] = picture.seq
        return f"{self.url}?{urllib.parse.urlencode(query)}"


def _reason(err: urllib.error.HTTPError) -> str:
    """The server's ``detail``, or the start of whatever it said (a proxy's HTML page, say)."""
    try:
        body = err.read(2000).decode("utf-8", "replace")
    except OSError:
        return err.reason or ""
    try:
        detail = json.loads(body).get("detail")
        return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    except (ValueError, AttributeError):
        return body.strip()[:200] or str(err.reason)
