"""Model pack: round trip, and every way a pack can be broken is refused with the file named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.pack import FORMAT_VERSION, MANIFEST, PackError, load_pack, read_manifest, write_manifest


def test_tiny_pack_loads_and_lists_every_file(tiny_pack_dir: Path) -> None:
    pack = load_pack(tiny_pack_dir)
    names = set(pack.manifest.files)
    assert {"text_encoder.onnx", "unet.onnx", "vae_decoder.onnx", "vae_encoder.onnx", "vocab.txt"} <= names
    on_disk = {p.name for p in tiny_pack_dir.iterdir() if p.is_file()} - {MANIFEST}
    assert names == on_disk
    assert len(pack.fingerprint) == 64


def test_manifest_round_trip_is_stable(tiny_pack_copy: Path) -> None:
    before = (tiny_pack_copy / MANIFEST).read_text()
    manifest = read_manifest(tiny_pack_copy)
    write_manifest(tiny_pack_copy, manifest)
    assert (tiny_pack_copy / MANIFEST).read_text() == before
    assert load_pack(tiny_pack_copy).manifest == manifest


@pytest.mark.parametrize("name", ["unet.onnx", "text_encoder.onnx", "vae_decoder.onnx", "vocab.txt"])
def test_missing_file_is_named(tiny_pack_copy: Path, name: str) -> None:
    (tiny_pack_copy / name).unlink()
    with pytest.raises(PackError, match=rf"{name}: missing"):
        load_pack(tiny_pack_copy)


def test_truncated_file_is_named(tiny_pack_copy: Path) -> None:
    path = tiny_pack_copy / "unet.onnx"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PackError, match=r"unet\.onnx: size .* truncated"):
        load_pack(tiny_pack_copy)


def test_altered_file_is_named(tiny_pack_copy: Path) -> None:
    path = tiny_pack_copy / "vae_decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(data))
    with pytest.raises(PackError, match=r"vae_decoder\.onnx: sha256 does not match"):
        load_pack(tiny_pack_copy)


def _edit_manifest(root: Path, edit) -> None:
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    (root / MANIFEST).write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "format_version"),
        (lambda d: d.update(format="something-else"), "format is"),
        (lambda d: d.update(surprise=1), r"unknown key\(s\): surprise"),
        (lambda d: d["latent"].update(extra=2), r"latent: unknown key\(s\): extra"),
        (lambda d: d["schedule"].update(prediction_type="sample"), "prediction_type"),
        (lambda d: d["files"].pop("unet.onnx"), "unet.onnx is not listed"),
        (lambda d: d["files"].update({"../evil.onnx": d["files"]["unet.onnx"]}), "plain name"),
        (lambda d: d.pop("latent"), "incomplete"),
    ],
)
def test_bad_manifest_is_refused(tiny_pack_copy: Path, edit, message: str) -> None:
    _edit_manifest(tiny_pack_copy, edit)
    with pytest.raises(PackError, match=message):
        load_pack(tiny_pack_copy)


def test_not_a_pack(tmp_path: Path) -> None:
    with pytest.raises(PackError, match=r"model\.json is missing"):
        load_pack(tmp_path)
    with pytest.raises(PackError, match="not a folder"):
        load_pack(tmp_path / "nowhere")
    (tmp_path / MANIFEST).write_text("{ not json")
    with pytest.raises(PackError, match="cannot be read as JSON"):
        load_pack(tmp_path)


def test_corrupt_onnx_with_matching_hash_fails_at_load_with_the_file_named(tiny_pack_copy: Path) -> None:
    """A garbage graph whose hash was (wrongly) re-recorded still gives an error naming it."""
    from engine.runtime import BackendError, OrtBackend

    (tiny_pack_copy / "unet.onnx").write_bytes(b"not an onnx graph")
    write_manifest(tiny_pack_copy, read_manifest(tiny_pack_copy))
    with pytest.raises(BackendError, match=r"unet\.onnx: onnxruntime cannot load it"):
        OrtBackend(load_pack(tiny_pack_copy), requested="cpu")


def test_copy_of_pack_verifies(tiny_pack_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_pack_dir, tmp_path / "moved"))
    assert load_pack(copy).fingerprint == load_pack(tiny_pack_dir).fingerprint


# --------------------------------------------------------------------------- every byte loaded is hashed


def _externalise(pack: Path, name: str, location: str) -> Path:
    """Move ``name``'s initializers into the external-data file ``location`` (as onnx saves big graphs)."""
    import onnx

    model = onnx.load_model(pack / name)
    onnx.save_model(model, pack / name, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)  # fmt: skip
    return pack / location


def test_unlisted_external_data_file_is_refused(tiny_pack_copy: Path) -> None:
    """An ONNX graph whose weights live in a file model.json does not hash: that file could change the
    images without changing the fingerprint, so the pack is refused, naming both files."""
    _externalise(tiny_pack_copy, "vae_decoder.onnx", "decoder.weights")
    write_manifest(tiny_pack_copy, read_manifest(tiny_pack_copy))  # re-hash vae_decoder.onnx
    manifest = json.loads((tiny_pack_copy / MANIFEST).read_text())
    manifest["files"].pop("decoder.weights", None)
    (tiny_pack_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackError, match=r"vae_decoder\.onnx.*decoder\.weights.*not listed"):
        load_pack(tiny_pack_copy)


def test_listed_external_data_is_hashed_and_in_the_fingerprint(tiny_pack_copy: Path, tiny_pack_dir: Path) -> None:
    from engine.runtime import OrtBackend

    weights = _externalise(tiny_pack_copy, "vae_decoder.onnx", "decoder.weights")
    write_manifest(tiny_pack_copy, read_manifest(tiny_pack_copy))  # lists the external file too
    pack = load_pack(tiny_pack_copy)
    assert "decoder.weights" in pack.manifest.files
    assert pack.fingerprint != load_pack(tiny_pack_dir).fingerprint
    OrtBackend(pack, requested="cpu")  # onnxruntime loads it
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PackError, match=r"decoder\.weights: sha256 does not match"):
        load_pack(tiny_pack_copy)


def test_external_data_outside_the_pack_is_refused(tiny_pack_copy: Path, tmp_path: Path) -> None:
    _externalise(tiny_pack_copy, "unet.onnx", "unet.weights")
    (tmp_path / "elsewhere").mkdir()
    (tiny_pack_copy / "unet.weights").rename(tmp_path / "elsewhere" / "unet.weights")
    import onnx

    model = onnx.load_model(tiny_pack_copy / "unet.onnx", load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere/unet.weights"
    onnx.save_model(model, tiny_pack_copy / "unet.onnx")
    with pytest.raises(PackError, match="must be a plain name"):  # write_manifest will not list it either
        write_manifest(tiny_pack_copy, read_manifest(tiny_pack_copy))
    from engine.pack import sha256_file

    def rehash(data: dict) -> None:
        unet = tiny_pack_copy / "unet.onnx"
        data["files"]["unet.onnx"] = {"sha256": sha256_file(unet), "size": unet.stat().st_size}

    _edit_manifest(tiny_pack_copy, rehash)
    with pytest.raises(PackError, match=r"unet\.onnx.*\.\./elsewhere/unet\.weights"):
        load_pack(tiny_pack_copy)


@pytest.mark.parametrize("name", ["vocab.txt", "unet.onnx", MANIFEST])
def test_symlink_out_of_the_pack_is_refused(tiny_pack_copy: Path, tmp_path: Path, name: str) -> None:
    """``vocab.txt -> /some/other/file`` was followed and read: a pack is only what is inside its folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / name
    target.write_bytes((tiny_pack_copy / name).read_bytes())
    (tiny_pack_copy / name).unlink()
    (tiny_pack_copy / name).symlink_to(target)
    with pytest.raises(PackError, match=rf"{name.replace('.', '[.]')}.*outside the pack"):
        load_pack(tiny_pack_copy)


def test_symlink_inside_the_pack_is_allowed(tiny_pack_copy: Path) -> None:
    (tiny_pack_copy / "vocab.txt").rename(tiny_pack_copy / "real-vocab.txt")
    (tiny_pack_copy / "vocab.txt").symlink_to("real-vocab.txt")
    write_manifest(tiny_pack_copy, read_manifest(tiny_pack_copy))
    load_pack(tiny_pack_copy)


# --------------------------------------------------------------------------- types checked at load


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["preview"].update(weight=0.5), r"preview\.weight must be a list of numbers"),
        (lambda d: d["preview"].update(weight=["a"] * 4), r"preview\.weight must be a list of numbers"),
        (lambda d: d["preview"].update(bias="0"), r"preview\.bias must be a number"),
        (lambda d: d["image"].update(height="32"), r"image\.height must be a whole number"),
        (lambda d: d["defaults"].update(num_steps=2.5), r"defaults\.num_steps must be a whole number"),
        (lambda d: d["defaults"].update(num_steps=True), r"defaults\.num_steps must be a whole number"),
        (lambda d: d["text"].update(lowercase="yes"), r"text\.lowercase must be true or false"),
        (lambda d: d["text"].update(vocab_file=["vocab.txt"]), r"text\.vocab_file must be text"),
        (lambda d: d.update(model_id=["a", "b"]), r"model_id must be text"),
        (lambda d: d.update(model_id=""), r"model_id must not be empty"),
        (lambda d: d.update(card=["a"]), r"'card' must be an object"),
        (lambda d: d["card"].update(example_prompts="one prompt"), r"card\.example_prompts must be a list of text"),
        (lambda d: d["card"].update(supported_findings=[["x"]]), r"card\.supported_findings must be a list of text"),
        (lambda d: d["card"].update(name={"a": {"b": 1}}), r"card\.name: "),
        (lambda d: d["files"]["unet.onnx"].update(size="12"), r"files\.unet\.onnx\.size must be a whole number"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(tiny_pack_copy: Path, edit, message: str) -> None:
    """A numeric preview.weight or a list-valued field gave TypeError/AttributeError later (at generation,
    in the card printout); now load_pack refuses it with the field named."""
    _edit_manifest(tiny_pack_copy, edit)
    with pytest.raises(PackError, match=message):
        load_pack(tiny_pack_copy)


def test_deeply_nested_model_json_is_a_pack_error(tiny_pack_copy: Path) -> None:
    """json.loads raises RecursionError on deep nesting: reported like any other bad JSON."""
    (tiny_pack_copy / MANIFEST).write_text('{"card": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(PackError, match=r"model\.json: cannot be read as JSON: nested too deeply"):
        load_pack(tiny_pack_copy)


@pytest.mark.parametrize("content", ["", "hello\nworld\n", "[PAD]\n[UNK]\n[CLS]\n"])
def test_vocab_without_special_tokens_is_refused(tiny_pack_copy: Path, content: str) -> None:
    """An empty vocab.txt gave 'TypeError: sep_token not found' when the tokenizer was built."""
    (tiny_pack_copy / "vocab.txt").write_text(content)
    write_manifest(tiny_pack_copy, read_manifest(tiny_pack_copy))
    with pytest.raises(PackError, match=r"vocab\.txt \(text\.vocab_file\): .*lacks .*\[SEP\]"):
        load_pack(tiny_pack_copy)


def test_tokenizer_names_an_unusable_vocab(tmp_path: Path) -> None:
    from engine.text import WordPieceTokenizer

    (tmp_path / "vocab.txt").write_text("")
    with pytest.raises(ValueError, match=r"vocab\.txt: not a usable WordPiece vocabulary"):
        WordPieceTokenizer(tmp_path / "vocab.txt", lowercase=True, max_tokens=8)


def test_card_text_from_model_json_alone_is_the_info_text_without_the_fingerprint(tiny_pack_dir: Path) -> None:
    """One card text: ``info`` and the app's model window show the verified pack's, the model
    manager lists packs from model.json alone (no hashing), without the fingerprint line."""
    from engine.pack import card_text

    pack = load_pack(tiny_pack_dir)
    full = card_text(pack.manifest, pack.root, pack.fingerprint)
    listed = card_text(read_manifest(tiny_pack_dir), pack.root)
    assert f"Fingerprint: {pack.fingerprint}" in full.splitlines()
    assert listed.splitlines() == [line for line in full.splitlines() if not line.startswith("Fingerprint:")]
    assert f"Model: {pack.model_id}" in listed and f"Folder: {pack.root}" in listed


def test_load_model_pack_names_where_the_model_came_from(tiny_pack_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """--model, else $CXR_STUDIO_MODEL (named in every error about it), else the embedded default."""
    from engine.pack import load_model_pack

    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tmp_path / "missing"))
    assert load_model_pack(tiny_pack_dir).root == tiny_pack_dir.resolve()  # --model wins over the variable
    with pytest.raises(PackError, match=r"^CXR_STUDIO_MODEL=\S+missing: no model pack there"):
        load_model_pack(None)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tmp_path / "empty"))
    with pytest.raises(PackError, match=r"^CXR_STUDIO_MODEL=\S+empty: .*model.json is missing"):
        load_model_pack(None)
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tiny_pack_dir))
    assert load_model_pack(None).root == tiny_pack_dir.resolve()


def test_the_atomic_writers_are_imported_from_engine_fileio_only() -> None:
    """engine.pack used to re-export fileio's atomic writers, and callers imported them from the wrong place."""
    import ast

    import engine.pack

    repo = Path(__file__).resolve().parents[2]
    offenders = sorted(
        str(path.relative_to(repo))
        for package in ("engine", "desktop", "training", "packaging", "tests")
        for path in (repo / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom)
        and node.module == "engine.pack"
        and any(alias.name.startswith("atomic_write") for alias in node.names)
    )
    assert offenders == []
    assert "atomic_write_bytes" not in getattr(engine.pack, "__all__", ())
