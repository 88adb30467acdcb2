"""A new jisaku for a Pi: the wheel of a ``jisaku`` bundle, installed beside the running one, offline.

A bundle of kind ``jisaku`` holds one ``.whl`` (``jisaku bundle build dist/jisaku-0.5-py3-none-any.whl
--version 0.5``). Staged in ``jisaku/<version>/``, it is installed with pip into
``jisaku/<version>/site/``, with no index and no dependencies, so it needs no internet::

    python -m pip install --no-index --no-deps --target jisaku/0.5/site jisaku/0.5/jisaku-0.5-py3-none-any.whl

The supervisor then starts the app with ``PYTHONPATH=jisaku/0.5/site``: Python finds that jisaku
before the one installed with the device, which stays as it was (the supervisor itself keeps
running it, so a broken wheel can never take the supervisor, and the way back, with it).

A new dependency: the wheel's requirements (``Requires-Dist``, those not tied to an extra) are
checked against what this Pi has before switching; one that is missing refuses the update
(reason ``dependency``) with its name, so the operator knows to install it first (``pip
install NAME`` on the Pi, or a wheel of it). A dependency present but too old is not caught
here: the new jisaku then fails to start, and the trial brings the device back (``crash``).

Example::

    site = install_wheel(Path("data/devices/tray-1/jisaku/0.5"))      # jisaku/0.5/site
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from jisaku.contract.bundles import BundleRefused

SITE = "site"
PIP_TIMEOUT_S = 600   # a Pi Zero unpacks a few MB in well under a minute; this is only a guard


def the_wheel(folder: Path) -> Path:
    wheels = sorted(Path(folder).glob("*.whl"))
    if len(wheels) != 1:
        raise BundleRefused("format", f"a jisaku bundle holds exactly one .whl file; this one has {len(wheels)}:"
                                      " build it with jisaku bundle build dist/jisaku-X-py3-none-any.whl --version X")
    return wheels[0]


def missing_requirements(wheel: Path) -> list[str]:
    """The wheel's requirements (not those of an extra) that no installed distribution provides."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise BundleRefused("format", f"{wheel.name} is not a wheel (no .dist-info/METADATA)")
        metadata = archive.read(names[0]).decode("utf-8", "replace")
    missing = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.removeprefix("Requires-Dist:").strip()
        if "extra ==" in requirement.replace('"', "").replace("'", ""):
            continue  # an optional part (jisaku[web], …): not needed to run a device
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if not name:
            continue
        try:
            importlib.metadata.distribution(name.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def install_wheel(folder: Path) -> Path:
    """Install the staged wheel in ``folder`` into ``folder/site`` (once); that site folder."""
    folder = Path(folder)
    site = folder / SITE
    if site.is_dir():
        return site  # installed before (a power cut after installing, before switching)
    wheel = the_wheel(folder)
    missing = missing_requirements(wheel)
    if missing:
        raise BundleRefused("dependency", f"{wheel.name} needs {', '.join(missing)}, which this Pi does not have:"
                                          " install it on the Pi first (pip install NAME), then offer the update again")
    # Installed beside the target, then renamed: a power cut leaves no half-installed jisaku.
    installing = folder / f".{SITE}.installing"
    shutil.rmtree(installing, ignore_errors=True)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--disable-pip-version-check", "--no-compile", "--target", str(installing), str(wheel)],
                          capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=environment)
    if done.returncode != 0:
        shutil.rmtree(installing, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise BundleRefused("install", f"pip could not install {wheel.name}: {last}"[:256])
    installing.rename(site)
    return site
