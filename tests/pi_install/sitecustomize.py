"""Makes a Python process act like a Raspberry Pi with only ``pip install jisaku`` (tests/test_roles.py).

Python imports ``sitecustomize`` at start from the first folder on its path that has one; the
tests put this folder first on PYTHONPATH. Every module named in JISAKU_TEST_NOT_INSTALLED then
fails to import, as on a Pi that never installed it. Through the environment it reaches the
processes that process starts too (``jisaku device run`` runs the app in a child process).
"""

import importlib.abc
import os
import sys

NOT_INSTALLED = set(filter(None, os.environ.get("JISAKU_TEST_NOT_INSTALLED", "").split(",")))


class NotOnThisPi(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in NOT_INSTALLED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
        return None


if NOT_INSTALLED:
    sys.meta_path.insert(0, NotOnThisPi())
