"""The kinds of device that come with jisaku, one folder each: see docs/kinds.md.

Each folder is read by :mod:`jisaku.contract.kinds`; its Python files import as
``jisaku.kinds.<folder>.<file>``, e.g. ``from jisaku.kinds.snow_gauge.pi import SnowGauge``.
"""
