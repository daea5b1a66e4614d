"""Where things live: the bundled default model, user model packs, user data and logs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP_NAME = "CXR Studio"
APP_AUTHOR = "CXR Studio"
DEFAULT_MODEL_NAME = "default"


def resources_dir() -> Path:
    """``resources/`` of a source checkout, or of a PyInstaller bundle (``sys._MEIPASS``)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


MODEL_VARIABLE = "CXR_STUDIO_MODEL"


def model_override() -> str | None:
    """``$CXR_STUDIO_MODEL`` when set and not empty: a pack folder that replaces the default model."""
    return os.environ.get(MODEL_VARIABLE) or None


def default_model_dir() -> Path:
    """``$CXR_STUDIO_MODEL`` if set, else the embedded default pack (read-only)."""
    override = model_override()
    if override:
        return Path(override)
    return resources_dir() / "models" / DEFAULT_MODEL_NAME


def user_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))


def user_models_dir() -> Path:
    """Drop a pack's folder here to install it."""
    return user_data_dir() / "models"


def user_log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME, APP_AUTHOR))
