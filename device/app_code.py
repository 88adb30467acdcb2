"""Where a Pi's app comes from: what came with the device, or a version an update put in ``app/<version>/``.

"The app" of a Pi is its code, never its device.toml: the device's own folder keeps its id, its
pins and its settings, and an update changes only the code that reads them. A bundle is one of

- a **kind folder** (it has a ``kind.toml``; ``jisaku bundle build kinds/printer_tray``): the device
  runs that folder's ``pi = "pi.py:Class"`` instead of the kind folder that came with jisaku. Its
  other files are imported from the bundle too (``from jisaku.kinds.printer_tray.x import y``
  finds the bundle's ``x.py``), and its ``[settings]`` limits apply;
- an **app folder** for a device with ``app = "file.py:Class"`` in its device.toml
  (``jisaku bundle build ./tray-app --target printer_tray``): the bundle's ``file.py`` is run
  instead of the one in the device's folder.

Example::

    code = AppCode(config, Path("data/devices/tray-1/app/1.4.0"))   # None: what came with the device
    code.check()                 # DeviceConfigError if this folder cannot run this device
    app_class = code.app_class()
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

from jisaku.contract import kinds

from .config import DeviceConfig, DeviceConfigError


class AppCode:
    def __init__(self, config: DeviceConfig, folder: Path | None):
        self.config = config
        self.folder = Path(folder) if folder is not None else None

    @property
    def is_kind_folder(self) -> bool:
        return self.folder is not None and (self.folder / kinds.DESCRIPTION).exists()

    def check(self) -> None:
        """Refuse (DeviceConfigError) a folder that cannot run this device, before switching to it."""
        if self.folder is None:
            return
        if self.is_kind_folder:
            described = kinds.read_folder(self.folder)  # KindError (a ValueError) says what is wrong
            if not described.pi:
                raise DeviceConfigError("the bundle's kind.toml has no pi = \"file.py:Class\": it cannot run on a Pi")
            return
        if ":" not in self.config.app:
            raise DeviceConfigError(f"the bundle has no kind.toml: {self.config.id} runs a kind's code, so its"
                                    " update must be built from a kind folder (jisaku bundle build kinds/<kind>)")
        file_name = self.config.app.partition(":")[0]
        if not (self.folder / file_name).is_file():
            raise DeviceConfigError(f"the bundle has no kind.toml and no {file_name}: it is not an app for"
                                    f" {self.config.id} (build it from its kind folder, or from a folder with {file_name})")

    def app_class(self) -> type:
        from .runner import app_class_for  # what came with the device

        if self.folder is None:
            return app_class_for(self.config)
        if self.is_kind_folder:
            described = kinds.read_folder(self.folder)
            return self._from_kind_folder(described.pi, "pi")
        file_name, _, class_name = self.config.app.partition(":")
        path = self.folder / file_name
        spec = importlib.util.spec_from_file_location(f"jisaku_app_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, class_name):
            raise DeviceConfigError(f"{path} has no class {class_name}")
        return getattr(module, class_name)

    def simulation_class(self) -> type | None:
        from .runner import kind_folder_for

        if self.is_kind_folder:
            described = kinds.read_folder(self.folder)
            return self._from_kind_folder(described.simulation, "simulation") if described.simulation else None
        if self.folder is not None:
            return None
        folder = kind_folder_for(self.config)
        return folder.simulation_class() if folder is not None else None

    def setting_limits(self, app: Any) -> dict:
        from .runner import setting_limits

        if self.is_kind_folder:
            return kinds.read_folder(self.folder).device_settings()
        if self.folder is not None:
            return dict(getattr(app, "SETTINGS", {}))
        return setting_limits(self.config, app)

    def _from_kind_folder(self, where: str, what: str) -> type:
        """A class of the bundle's kind folder, imported as ``jisaku.kinds.<the kind's folder>.<file>``."""
        package = self._package_name()
        file_name, _, class_name = where.partition(":")
        module = importlib.import_module(f"{package}.{file_name.removesuffix('.py')}")
        if not hasattr(module, class_name):
            raise DeviceConfigError(f"{self.folder / file_name} has no class {class_name} ({what} in kind.toml)")
        return getattr(module, class_name)

    def _package_name(self) -> str:
        """Make ``jisaku.kinds.<name>`` this process's name for the bundle's folder, and return it.

        The kind's files import one another by that name (``from jisaku.kinds.counter.queue import …``),
        so the bundle's folder takes the place of the one that came with jisaku, for this process only.
        """
        if self.config.app and ":" not in self.config.app:
            folder_name = self.config.app  # app = "snow_gauge": the device runs that kind folder
        else:
            kind = kinds.get(self.config.kind)
            folder_name = kind.folder.name if kind else self.config.kind
        name = f"jisaku.kinds.{folder_name}"
        if name not in sys.modules or getattr(sys.modules[name], "__path__", None) != [str(self.folder)]:
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(self.folder)]
            sys.modules[name] = importlib.util.module_from_spec(spec)
        return name
