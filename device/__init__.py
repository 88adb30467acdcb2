"""The device side of jisaku: the wire protocol, the link to the broker, and the example apps."""

__version__ = "0.1.0"
