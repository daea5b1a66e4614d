"""The one unknown-key check of the JSON-backed dataclasses: model.json (engine.pack), manifest lines
(engine.manifest), model configs (training.models.config) and prompt records (engine.findings.record).

An unknown key is an error, never ignored: a typo in a config would otherwise fall back to a default
without a word. Each reader raises its own error class under its own prefix; missing keys and value
types stay the reader's business.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any


def refuse_unknown_keys(
    data: Mapping[str, Any],
    allowed: Collection[str],
    error: Callable[[str], Exception],
    where: str = "",
    *,
    list_allowed: bool = False,
) -> None:
    """Raise ``error("WHERE: unknown key(s): a, b")`` (the keys sorted) when ``data`` holds a key not in
    ``allowed``; ``list_allowed`` appends ``; allowed: ...`` in ``allowed``'s order."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        message = f"unknown key(s): {', '.join(unknown)}"
        if where:
            message = f"{where}: {message}"
        if list_allowed:
            message += f"; allowed: {', '.join(allowed)}"
        raise error(message)
