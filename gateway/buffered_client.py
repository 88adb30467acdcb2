"""A paho client that reads and writes its socket in large pieces.

paho reads each incoming packet in pieces: one byte for the type, one per length
byte, then the rest, each a system call of its own, plus a ``select`` between
packets; and it sends each acknowledgement with a system call of its own. At
thousands of readings a second that was most of the gateway's time.

Here the socket reads ahead 64 KB at a time and tells paho, through the
``pending()`` that paho already asks of TLS sockets, that more is waiting; and
what paho sends in one round of writing goes out in one ``send``.

Example::

    client = new_client("jisaku-gateway", "_gateway", secret, broker, client_class=BufferedClient)
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

READ_SIZE = 65536


class BufferedSocket:
    """Wraps a connected socket; what is not about reading or writing goes straight to it."""

    def __init__(self, sock):
        self._sock = sock
        self._data = b""
        self._pos = 0
        self._out = bytearray()

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._data):
            # Raises BlockingIOError when nothing has arrived, as paho expects.
            self._data = self._sock.recv(max(size, READ_SIZE))
            self._pos = 0
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def pending(self) -> int:
        """Bytes read from the network that paho has not taken yet."""
        pending = len(self._data) - self._pos
        if hasattr(self._sock, "pending"):  # a TLS socket has its own buffer too
            pending += self._sock.pending()
        return pending

    def send(self, data) -> int:
        self._out += data
        return len(data)

    def unsent(self) -> int:
        return len(self._out)

    def flush(self) -> None:
        """Send what paho wrote; raises BlockingIOError if the network is full for now."""
        while self._out:
            sent = self._sock.send(self._out)
            del self._out[:sent]

    def __getattr__(self, name):
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    _buffered: BufferedSocket | None = None

    def _create_socket(self):
        self._buffered = BufferedSocket(super()._create_socket())
        return self._buffered

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # Take every packet already read ahead, not one per trip through select.
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._buffered is not None and self._buffered.pending():
            rc = super().loop_read(max_packets)
        return rc

    def loop_write(self) -> mqtt.MQTTErrorCode:
        rc = super().loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS and self._buffered is not None:
            try:
                self._buffered.flush()
            except BlockingIOError:
                pass  # the rest goes when select says the socket can take more (want_write)
            except OSError:
                return mqtt.MQTT_ERR_CONN_LOST
        return rc

    def want_write(self) -> bool:
        return super().want_write() or (self._buffered is not None and self._buffered.unsent() > 0)
