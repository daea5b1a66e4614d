"""The one unknown-key check of the JSON dataclasses (model.json, manifests, model configs, prompt records)."""

from __future__ import annotations

import pytest

from engine.jsonfields import refuse_unknown_keys


class _Error(ValueError):
    pass


def test_known_keys_pass_and_missing_ones_are_not_its_business() -> None:
    refuse_unknown_keys({"a": 1}, ("a", "b"), _Error, "thing")  # b may be optional: the caller decides


@pytest.mark.parametrize(
    ("where", "list_allowed", "message"),
    [
        ("thing", False, "thing: unknown key(s): y, z"),  # sorted, named, under the caller's prefix
        ("", False, "unknown key(s): y, z"),
        ("", True, "unknown key(s): y, z; allowed: a, b"),
    ],
)
def test_unknown_keys_are_named_in_the_callers_error(where: str, list_allowed: bool, message: str) -> None:
    with pytest.raises(_Error) as info:
        refuse_unknown_keys({"z": 0, "a": 1, "y": 2}, ("a", "b"), _Error, where, list_allowed=list_allowed)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("engine.pack", "model.json: unknown key(s): surprise"),
        ("engine.pack section", "model.json: latent: unknown key(s): extra"),
        ("engine.manifest", "unknown key(s): typo; allowed: image, text"),
        ("engine.findings.record", "prompt record: unknown key(s): colour"),
    ],
)
def test_each_reader_uses_it(call: str, message: str, tiny_pack_dir) -> None:
    """Each reader keeps its own prefix (and the manifest its list of allowed keys)."""
    import json

    if call.startswith("engine.pack"):
        from engine.pack import PackError, manifest_from_json

        data = json.loads((tiny_pack_dir / "model.json").read_text())
        if call == "engine.pack":
            data["surprise"] = 1
        else:
            data["latent"]["extra"] = 2
        with pytest.raises(PackError) as info:
            manifest_from_json(data)
        assert str(info.value) == message
    elif call == "engine.manifest":
        from engine.manifest import ManifestError, ManifestRecord

        with pytest.raises(ManifestError) as info:
            ManifestRecord.from_dict(
                {"image": "a.png", "text": "x", "findings": {}, "patient_id": "p", "view": "PA", "split": "train",
                 "source": "s", "typo": 1}
            )  # fmt: skip
        assert str(info.value).startswith(message)
    else:
        from engine.findings.parse import parse_prompt
        from engine.findings.record import PromptRecord, RecordError

        data = parse_prompt("no effusion").to_dict() | {"colour": "red"}
        with pytest.raises(RecordError) as info:
            PromptRecord.from_dict(data)
        assert str(info.value) == message
