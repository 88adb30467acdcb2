"""Browser files from npm packages (charts, the Japanese font, PMTiles, map drawing), served by the app.

They come from the npm registry through the repository's ``package.json``
(``make demo`` and ``make test`` run ``npm ci``), so residents' phones never load
anything from a CDN. Leaflet itself comes from PyPI (XStatic-Leaflet), in ``app.py``.

Example::

    mount_vendor_files(app)        # /static/vendor/uplot/uPlot.iife.min.js, ...
    app.state.vendor_missing       # ["uplot", ...] when `npm ci` was not run

A missing package does not stop the app: pages still work (system fonts, tables
instead of charts) and the log says what to run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent

# URL name -> folder inside node_modules whose files are served.
PACKAGES = {
    "uplot": "uplot/dist",
    "pmtiles": "pmtiles/dist",
    "noto-sans-jp": "@fontsource/noto-sans-jp",
    "geoman": "@geoman-io/leaflet-geoman-free/dist",   # drawing areas on the operators' rules page
}


def node_modules() -> Path:
    """Where ``npm ci`` put the packages: ``$JISAKU_NODE_MODULES``, else next to this checkout."""
    return Path(os.environ.get("JISAKU_NODE_MODULES", REPO / "node_modules"))


def mount_vendor_files(app: FastAPI) -> list[str]:
    """Serve each package under ``/static/vendor/<name>/``; return the names that are missing."""
    missing = []
    root = node_modules()
    for name, folder in PACKAGES.items():
        directory = root / folder
        if directory.is_dir():
            app.mount(f"/static/vendor/{name}", StaticFiles(directory=directory), name=f"vendor-{name}")
        else:
            missing.append(name)
    if missing:
        log.warning("Browser files of %s are missing from %s: charts and the Japanese font will not load. "
                    "Run `npm ci` in %s (make demo does it).", ", ".join(missing), root, REPO)
    app.state.vendor_missing = missing
    return missing
