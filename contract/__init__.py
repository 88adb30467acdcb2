"""What every part of jisaku agrees on, with no dependency on any of them.

Devices, the gateway, the dashboard and the command line all import from here;
nothing here imports from them (tests/test_contract.py checks). See the README's
layout table.

- ``protocol``: the wire contract v1, topics and payloads (docs/protocol.md)
- ``rights``: who may publish and read which topics, for both brokers
- ``mqtt``: how every part connects to the broker (``BrokerAddress``, ``new_client``)
- ``geo``: distances, bearings and routes on the map
"""
