"""What the app remembers between runs (QSettings): last model, generation defaults, viewer presets, history,
the last dataset manifest.

PACS nodes are the exception: they live in engine.dicom.nodes' file, shared with the command line."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from engine.dicom import nodes
from engine.dicom.pacs import PacsNode

log = logging.getLogger(__name__)

ORGANIZATION = "CXR Studio"
APPLICATION = "CXR Studio"
HISTORY_LIMIT = 50


SETTINGS_ENV = "CXR_STUDIO_SETTINGS"  # an INI file to use instead of the user's (tests, portable installs)


def default_settings() -> QSettings:
    """``$CXR_STUDIO_SETTINGS`` if set, else the INI file in the user's config folder."""
    override = os.environ.get(SETTINGS_ENV)
    if override:
        return QSettings(override, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


class Settings:
    """Typed access to a QSettings store (INI in the user's config folder, or a file the tests pass)."""

    def __init__(self, store: QSettings | None = None) -> None:
        self.store = store if store is not None else default_settings()

    def _get(self, key: str, default: Any, kind: type) -> Any:
        value = self.store.value(key, default)
        if value is None:
            return default
        try:
            if kind is bool:
                return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            return kind(value)
        except (TypeError, ValueError):
            return default

    def _json(self, key: str, default: Any) -> Any:
        text = self.store.value(key, "")
        try:
            return json.loads(text) if text else default
        except (TypeError, ValueError):
            return default

    # model
    @property
    def last_model(self) -> str:
        return self._get("model/last_path", "", str)

    @last_model.setter
    def last_model(self, path: str) -> None:
        self.store.setValue("model/last_path", path)

    # generation defaults: a dict with sampler, num_steps, guidance_scale, negative_prompt, seed, seed_locked,
    # batch_count (only the keys that were saved)
    def generation(self) -> dict[str, Any]:
        return self._json("generation/defaults", {})

    def set_generation(self, values: dict[str, Any]) -> None:
        self.store.setValue("generation/defaults", json.dumps(values))

    # prompts
    def history(self) -> list[str]:
        values = self._json("prompt/history", [])
        return [str(v) for v in values if isinstance(v, str)][:HISTORY_LIMIT]

    def set_history(self, prompts: list[str]) -> None:
        self.store.setValue("prompt/history", json.dumps(prompts[:HISTORY_LIMIT]))

    # viewer
    def window_presets_json(self) -> str:
        return self._get("viewer/window_presets", "", str)

    def set_window_presets_json(self, text: str) -> None:
        self.store.setValue("viewer/window_presets", text)

    def viewer(self) -> dict[str, Any]:
        return self._json("viewer/display", {})

    def set_viewer(self, values: dict[str, Any]) -> None:
        self.store.setValue("viewer/display", json.dumps(values))

    # export
    def export(self) -> dict[str, Any]:
        return self._json("export/options", {})

    def set_export(self, values: dict[str, Any]) -> None:
        self.store.setValue("export/options", json.dumps(values))

    # PACS nodes live in engine.dicom.nodes' JSON file, so the app and `cxr-studio pacs` share them
    def pacs_nodes(self) -> list[dict[str, Any]]:
        try:
            return [node.to_dict() for node in nodes.load_nodes().values()]
        except ValueError as exc:
            log.warning("%s", exc)
            return []

    def set_pacs_nodes(self, values: list[dict[str, Any]]) -> None:
        nodes.save_nodes({v["name"]: PacsNode.from_dict(v) for v in values})

    # dataset explorer
    @property
    def last_manifest(self) -> str:
        return self._get("dataset/last_manifest", "", str)

    @last_manifest.setter
    def last_manifest(self, path: str) -> None:
        self.store.setValue("dataset/last_manifest", path)

    def dataset_explorer_geometry(self) -> QByteArray | None:
        value = self.store.value("dataset/geometry")
        return value if isinstance(value, QByteArray) else None

    def set_dataset_explorer_geometry(self, geometry: QByteArray) -> None:
        self.store.setValue("dataset/geometry", geometry)

    # window
    def geometry(self) -> QByteArray | None:
        value = self.store.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    def set_geometry(self, geometry: QByteArray, state: QByteArray) -> None:
        self.store.setValue("window/geometry", geometry)
        self.store.setValue("window/state", state)

    def state(self) -> QByteArray | None:
        value = self.store.value("window/state")
        return value if isinstance(value, QByteArray) else None

    def sync(self) -> None:
        self.store.sync()
