"""What every part of jisaku agrees on, with no dependency on any of them.

Devices, the gateway, the dashboard and the command line all import from here;
nothing here imports from them. See the README's layout table.
"""
