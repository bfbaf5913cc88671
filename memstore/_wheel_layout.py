"""hatchling build hook (not shipped): the wheel carries the repo's top-level ``adapters/`` folder as
``memstore/adapters``, so that ``memstore`` is the only top-level package a wheel installs. Editable installs
map only ``memstore`` and leave ``adapters/`` where it is; memstore/__init__.py serves it as
``memstore.adapters`` from there."""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class AdaptersInsideMemstore(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"]["adapters"] = "memstore/adapters"
