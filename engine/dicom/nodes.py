"""Configured PACS nodes, kept as JSON in the user config dir (the CLI and the app share them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

from engine.dicom.pacs import PacsNode
from engine.fileio import atomic_write_bytes
from engine.paths import APP_AUTHOR, APP_NAME


def nodes_file() -> Path:
    override = os.environ.get("CXR_STUDIO_NODES")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir(APP_NAME, APP_AUTHOR)) / "pacs_nodes.json"


def load_nodes(path: Path | None = None) -> dict[str, PacsNode]:
    path = path or nodes_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {item["name"]: PacsNode.from_dict(item) for item in data["nodes"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the PACS nodes ({exc}); fix or delete the file") from None


def save_nodes(nodes: dict[str, PacsNode], path: Path | None = None) -> Path:
    path = path or nodes_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"nodes": [nodes[name].to_dict() for name in sorted(nodes)]}
    # It may hold a DICOMweb password: 0600 from the temporary file's creation on, never chmod-ed after
    # the fact (a file first made with the umask's 0644 is readable by others for a moment).
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"), mode=0o600)
    return path


def get_node(name: str, path: Path | None = None) -> PacsNode:
    nodes = load_nodes(path)
    if name not in nodes:
        known = ", ".join(sorted(nodes)) or "none configured"
        raise ValueError(f"no PACS node named {name!r} (known: {known}); add one with `cxr-studio pacs add`")
    return nodes[name]
