# Test stand-in for MicroPython's network module: a Wi-Fi that tests switch on and off.
#
# Not shipped to boards. ``up`` says whether the access point is in reach.


STA_IF = 0
up = True
joins = 0


class WLAN:
    def __init__(self, interface):
        self.joined = False

    def active(self, on=None):
        return True

    def connect(self, ssid, password):
        global joins
        joins += 1
        self.joined = up

    def disconnect(self):
        self.joined = False

    def isconnected(self):
        if not up:
            self.joined = False
        return self.joined

    def ifconfig(self):
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")
