# Test stand-in for the socket module: just enough for an NTP query.
#
# Not shipped to boards. ``ntp_unix`` is what the time server says (None: unreachable).


AF_INET = 2
SOCK_DGRAM = 2
ntp_unix = None
asked = 0


def getaddrinfo(host, port):
    return [(AF_INET, SOCK_DGRAM, 0, "", (host, port))]


class socket:
    def __init__(self, family=AF_INET, kind=SOCK_DGRAM):
        pass

    def settimeout(self, seconds):
        pass

    def sendto(self, data, address):
        global asked
        asked += 1
        if ntp_unix is None:
            raise OSError(110)  # ETIMEDOUT

    def recv(self, size):
        answer = bytearray(48)
        answer[40:44] = (ntp_unix + 2208988800).to_bytes(4, "big")
        return bytes(answer)

    def close(self):
        pass
