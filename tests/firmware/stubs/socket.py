# Test stand-in for the socket module: an NTP query, and TCP relayed to a real server.
#
# Not shipped to boards. ``ntp_unix`` is what the time server says (None: unreachable).
#
# TCP (SOCK_STREAM): the WebAssembly port has no sockets of its own, so a connection is
# relayed from the host: what the board writes is sent, once it starts reading, to the real
# server by a small Node child process over a real TCP connection, and the server's whole
# answer comes back to be read. Tests can cut a connection like a dropped link:
# ``cuts[n] = (bytes, what)`` cuts the n-th connection (from 1) after that many bytes of the
# answer's body, raising ``what`` (an OSError: the link dropped; or any exception, e.g. a
# power cut). ``requests`` keeps the first lines and Range headers the board sent;
# ``on_read`` is called at every read (the memory test measures the heap there), and
# ``own_bytes`` counts the heap this stand-in allocated for itself, which a board's socket does not.


import binascii

AF_INET = 2
SOCK_STREAM = 1
SOCK_DGRAM = 2
ntp_unix = None
asked = 0
requests = []        # [(request line, range header)] of every TCP connection
cuts = {}            # connection number -> (body bytes before the cut, exception to raise)
on_read = None
own_bytes = 0        # heap this stand-in allocated itself (a board's socket keeps its buffers elsewhere)
_relay = None


def _heap():
    import gc
    return gc.mem_alloc()


def getaddrinfo(host, port):
    return [(AF_INET, SOCK_STREAM, 0, "", (host, port))]


def relay(request, host, port):
    # The real TCP connection, made by Node from the host side (synchronously: the board waits).
    # The request and the answer go through files: objects handed between MicroPython and
    # JavaScript are not freed at once, and would spoil the memory test.
    global _relay
    with open("/relay.request", "wb") as f:
        f.write(b"%s %d\n" % (host.encode(), port))
        f.write(request)
    if _relay is None:
        import js
        _relay = js.Function.new("""
            const cp = process.getBuiltinModule('child_process');
            const FS = globalThis.Module.FS;
            const asked = Buffer.from(FS.readFile('/relay.request'));
            const line = asked.indexOf(10);
            const [host, port] = asked.subarray(0, line).toString().split(' ');
            const script = "const net=require('net');const c=[];const input=require('fs').readFileSync(0);" +
              "const s=net.connect(+process.argv[2],process.argv[1],()=>s.write(input));" +
              "s.on('data',d=>c.push(d));" +
              "const done=()=>{process.stdout.write(Buffer.concat(c));process.exit(0)};" +
              "s.on('end',done);s.on('error',done);";
            const answer = cp.execFileSync(process.execPath, ['-e', script, host, port],
                                           {input: asked.subarray(line + 1)});
            FS.writeFile('/relay.answer', answer);
        """)
    _relay()
    import os
    answer = bytearray(os.stat("/relay.answer")[6])
    with open("/relay.answer", "rb") as f:
        f.readinto(answer)   # not read(): its buffers stay behind on this port
    return answer


class socket:
    def __init__(self, family=AF_INET, kind=SOCK_STREAM, proto=0):
        self.kind = kind
        self.address = None
        self.sent = b""
        self.answer = None
        self.at = 0
        self.cut = None

    def settimeout(self, seconds):
        pass

    # ---- NTP (UDP)

    def sendto(self, data, address):
        global asked
        asked += 1
        if ntp_unix is None:
            raise OSError(110)  # ETIMEDOUT

    def recv(self, size):
        if self.kind == SOCK_STREAM:
            return self.read(size)
        answer = bytearray(48)
        answer[40:44] = (ntp_unix + 2208988800).to_bytes(4, "big")
        return bytes(answer)

    # ---- TCP

    def connect(self, address):
        self.address = address

    def write(self, data):
        global own_bytes
        before = _heap()
        self.sent += bytes(data)
        own_bytes += _heap() - before
        return len(data)

    send = write

    def _answer(self):
        global own_bytes
        if self.answer is None:
            before = _heap()
            head = self.sent.split(b"\r\n")
            ranges = [line for line in head if line.lower().startswith(b"range:")]
            requests.append((head[0].decode(), ranges[0].decode() if ranges else None))
            self.answer = relay(self.sent, self.address[0], self.address[1])
            cut = cuts.pop(len(requests), None)
            if cut is not None:
                body_at = self.answer.find(b"\r\n\r\n") + 4
                self.answer = self.answer[:body_at + cut[0]]
                self.cut = cut[1]
            own_bytes += _heap() - before
        if on_read is not None:
            on_read()
        return self.answer

    def _end(self):
        if self.cut is not None:
            raise self.cut
        return b""

    def readline(self):
        answer = self._answer()
        if self.at >= len(answer):
            return self._end()
        end = answer.find(b"\n", self.at)
        end = len(answer) if end < 0 else end + 1
        line = answer[self.at:end]
        self.at = end
        return line

    def read(self, size=-1):
        answer = self._answer()
        if self.at >= len(answer):
            return self._end()
        end = len(answer) if size < 0 else min(len(answer), self.at + size)
        data = answer[self.at:end]
        self.at = end
        return data

    def readinto(self, buffer, size=None):
        # A board's socket copies straight into the buffer: what the copy here allocates is ours.
        global own_bytes
        self._answer()
        before = _heap()
        data = self.read(len(buffer) if size is None else size)
        buffer[:len(data)] = data
        count = len(data)
        data = None
        own_bytes += _heap() - before
        return count

    def close(self):
        pass
