"""ONNX export of the tiny checkpoint: valid graphs, dynamic batch, torch/ORT parity, fp16, CLI."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.pack import MANIFEST, load_pack, sha256_file
from engine.text import WordPieceTokenizer
from training.checkpoint import CheckpointError, LatentDiffusionModel
from training.export_onnx import MAX_IR_VERSION, OPSET, ExportError, export_pack, fit_preview
from training.models.vae import decode_from_diffusion, encode_to_diffusion

GRAPHS = ("text_encoder.onnx", "unet.onnx", "vae_decoder.onnx", "vae_encoder.onnx")
PROMPTS = ["Normal chest radiograph", "", "Large left pleural effusion with mediastinal shift " * 3]


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _tokens(pack: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    m = load_pack(pack, verify=False).manifest
    batch = WordPieceTokenizer(pack / "vocab.txt", lowercase=m.text.lowercase, max_tokens=m.text.max_tokens)
    tokens = batch.encode_batch(texts)
    return tokens.input_ids, tokens.attention_mask


def _inputs(model: LatentDiffusionModel, pack: Path, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of every graph for ``batch`` items (timesteps from 999 down to fractional)."""
    c = model.config
    rng = np.random.default_rng(seed)
    ids, mask = _tokens(pack, (PROMPTS * batch)[:batch])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "sample": rng.standard_normal((batch, c.latent_channels, c.latent_size, c.latent_size)).astype(np.float32),
        "timestep": np.linspace(999.0, 0.5, batch).astype(np.float32),
        "image": rng.uniform(-1, 1, (batch, 1, c.image_size, c.image_size)).astype(np.float32),
    }


def _torch_outputs(model: LatentDiffusionModel, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    s = model.config.scaling_factor
    with torch.no_grad():
        context = model.text(torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"]))
        sample = torch.from_numpy(x["sample"])
        return {
            "text_encoder.onnx": context.numpy(),
            "unet.onnx": model.unet(
                sample, torch.from_numpy(x["timestep"]), encoder_hidden_states=context
            ).sample.numpy(),
            "vae_decoder.onnx": decode_from_diffusion(model.vae, sample, s).numpy(),
            "vae_encoder.onnx": encode_to_diffusion(model.vae, torch.from_numpy(x["image"]), s).numpy(),
        }


def _ort_outputs(pack: Path, x: dict[str, np.ndarray], context: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {
        "text_encoder.onnx": {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]},
        "unet.onnx": {"sample": x["sample"], "timestep": x["timestep"], "context": context},
        "vae_decoder.onnx": {"latent": x["sample"]},
        "vae_encoder.onnx": {"image": x["image"]},
    }
    return {name: _session(pack / name).run(None, feed)[0] for name, feed in feeds.items()}


# --------------------------------------------------------------------------- the pack


def test_pack_is_complete_and_valid(tiny_pack: Path, tiny_model: LatentDiffusionModel) -> None:
    pack = load_pack(tiny_pack)  # verifies every file's size and sha256
    m = pack.manifest
    assert set(m.files) == {*GRAPHS, "vocab.txt"}
    assert {p.name for p in tiny_pack.iterdir()} == {*GRAPHS, "vocab.txt", MANIFEST}
    assert m.precision == "fp32" and m.model_id == "cxr-tiny-test"
    assert (m.image.height, m.image.width, m.latent.channels, m.latent.height) == (32, 32, 4, 8)
    assert m.latent.scaling_factor == tiny_model.config.scaling_factor == 0.5
    assert m.schedule == tiny_model.config.schedule
    assert (m.text.max_tokens, m.text.context_dim, m.text.lowercase) == (16, 32, True)
    assert m.text.encoder_name == "tiny-random-bert"
    assert "not for diagnosis" in m.card["intended_use"].lower() and "unknown" in m.card["training_data"].lower()
    assert (tiny_pack / "vocab.txt").read_bytes() == (tiny_model.text.folder / "vocab.txt").read_bytes()


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_checks_ir_opset_and_dynamic_batch(tiny_pack: Path, name: str) -> None:
    proto = onnx.load(str(tiny_pack / name))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version <= min(MAX_IR_VERSION, 13)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET >= 17
    for value in (*proto.graph.input, *proto.graph.output):
        first = value.type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.HasField("dim_value"), f"{value.name}: batch axis is not dynamic"
        expected = onnx.TensorProto.INT64 if value.name in ("input_ids", "attention_mask") else onnx.TensorProto.FLOAT
        assert value.type.tensor_type.elem_type == expected, value.name
        if value.name == "context":  # the text's T tokens, or T + K record tokens
            tokens = value.type.tensor_type.shape.dim[1]
            assert tokens.dim_param and not tokens.HasField("dim_value"), "context: token axis is not dynamic"


@pytest.mark.parametrize("batch", [1, 3])
def test_torch_and_onnxruntime_agree(tiny_pack: Path, tiny_model: LatentDiffusionModel, batch: int) -> None:
    x = _inputs(tiny_model, tiny_pack, batch)
    ref = _torch_outputs(tiny_model, x)
    out = _ort_outputs(tiny_pack, x, ref["text_encoder.onnx"])
    c = tiny_model.config
    shapes = {
        "text_encoder.onnx": (batch, 16, 32),
        "unet.onnx": (batch, 4, 8, 8),
        "vae_decoder.onnx": (batch, 1, 32, 32),
        "vae_encoder.onnx": (batch, c.latent_channels, 8, 8),
    }
    diffs = {name: float(np.abs(out[name] - ref[name]).max()) for name in GRAPHS}
    print(f"\nbatch {batch}: max |torch - ORT| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    for name in GRAPHS:
        assert out[name].shape == shapes[name] and out[name].dtype == np.float32, name
    assert diffs["unet.onnx"] < 1e-3
    assert diffs["text_encoder.onnx"] < 1e-4 and diffs["vae_decoder.onnx"] < 1e-4 and diffs["vae_encoder.onnx"] < 1e-4
    # padded positions stay exactly zero through ORT too
    padded = x["attention_mask"] == 0
    assert np.all(out["text_encoder.onnx"][padded] == 0)


def test_preview_is_the_least_squares_fit(tiny_pack: Path, tiny_model: LatentDiffusionModel) -> None:
    preview = load_pack(tiny_pack).manifest.preview
    assert len(preview.weight) == tiny_model.config.latent_channels
    assert fit_preview(tiny_model) == preview  # deterministic
    # The fit beats the best constant on fresh latents (it is least squares on 64 others).
    c = tiny_model.config
    z = torch.randn(16, c.latent_channels, 8, 8, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        target = torch.nn.functional.avg_pool2d(decode_from_diffusion(tiny_model.vae, z, c.scaling_factor), 4)[:, 0]
    fitted = np.einsum("c,bchw->bhw", np.array(preview.weight), z.numpy()) + preview.bias
    target = target.numpy()
    assert np.mean((fitted - target) ** 2) <= np.mean((target - target.mean()) ** 2) * 1.05


# --------------------------------------------------------------------------- fp16


def test_fp16_pack_loads_runs_and_is_close(
    tiny_checkpoint: Path, tiny_pack: Path, tiny_model: LatentDiffusionModel, tmp_path: Path
) -> None:
    pack16 = export_pack(tiny_checkpoint, tmp_path / "pack16", fp16=True, card={"training_data": "none"})
    m = load_pack(pack16).manifest
    assert m.precision == "fp16" and m.card["training_data"] == "none"
    assert "not for diagnosis" in m.card["intended_use"].lower()
    for name in GRAPHS:
        proto = onnx.load(str(pack16 / name))
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer), name
        assert proto.ir_version <= MAX_IR_VERSION
    # the sinusoidal timestep embedding stays float32 (sin(999 f) in float16 is off by ~0.3)
    unet = onnx.shape_inference.infer_shapes(onnx.load(str(pack16 / "unet.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in (*unet.graph.value_info, *unet.graph.input)}
    sines = [n for n in unet.graph.node if n.op_type in ("Sin", "Cos")]
    assert sines and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in sines)
    x = _inputs(tiny_model, tiny_pack, 3)
    context = _ort_outputs(tiny_pack, x, np.zeros((3, 16, 32), np.float32))["text_encoder.onnx"]
    ref = _ort_outputs(tiny_pack, x, context)
    out = _ort_outputs(pack16, x, context)
    for name in GRAPHS:
        assert out[name].dtype == np.float32 and np.all(np.isfinite(out[name])), name
        scale = max(1.0, float(np.abs(ref[name]).max()))
        error = float(np.abs(out[name] - ref[name]).max())
        print(f"fp16 {name}: max abs diff {error:.2e} (output scale {scale:.2f})")
        assert error < 2e-2 * scale, name


# --------------------------------------------------------------------------- refusals and the CLI


def test_export_refuses_a_used_folder_and_a_bad_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_pack(tiny_checkpoint, used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    with pytest.raises(CheckpointError, match="not a folder"):
        export_pack(tmp_path / "nothing", tmp_path / "pack")
    assert not (tmp_path / "pack").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def _parser() -> argparse.ArgumentParser:
    from training.cli import register_export_onnx

    parser = argparse.ArgumentParser(prog="cxr-studio")
    register_export_onnx(parser.add_subparsers(dest="command"))
    return parser


def test_cli_exports_the_same_bytes_and_fails_in_one_line(
    tiny_checkpoint: Path, tiny_pack: Path, tmp_path: Path, capsys
) -> None:
    argv = ["export-onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "p")]
    args = _parser().parse_args([*argv, "--model-id", "cxr-tiny-test"])  # the fixture's id: same model.json
    assert args.func(args) == 0
    for name in (*GRAPHS, "vocab.txt", MANIFEST):  # export is deterministic
        assert sha256_file(tmp_path / "p" / name) == sha256_file(tiny_pack / name), name
    capsys.readouterr()
    bad = _parser().parse_args(["export-onnx", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "q")])
    assert bad.func(bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cxr-studio export-onnx: error:") and "none" in err
    assert not (tmp_path / "q").exists()


def test_registering_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import argparse, sys; from training.cli import register_export_onnx; "
        "register_export_onnx(argparse.ArgumentParser().add_subparsers()); "
        "print('torch' in sys.modules, 'training.export_onnx' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- full generation parity


def _psnr(a: np.ndarray, b: np.ndarray, data_range: float = 2.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


@pytest.mark.parametrize("sampler", ["dpmpp-2m", "ddim", "euler"])
def test_twenty_step_generation_matches_torch(tiny_pack: Path, tiny_model: LatentDiffusionModel, sampler: str) -> None:
    """The same sampler, seed and guidance with a torch and an ORT model function: PSNR >= 40 dB."""
    if importlib.util.find_spec("engine.samplers") is None:
        pytest.skip("engine/samplers.py is not there yet (another part of the project)")
    from engine.samplers import sample

    m = load_pack(tiny_pack).manifest
    guidance_scale = 4.0
    ids, mask = _tokens(tiny_pack, ["", "Right upper lobe consolidation"])  # [uncond, cond]
    noise = np.random.default_rng(42).standard_normal((1, m.latent.channels, 8, 8)).astype(np.float32)

    def guided(unet: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        def model_fn(latent: np.ndarray, timestep: np.ndarray) -> np.ndarray:
            both = unet(np.concatenate([latent, latent]), np.concatenate([timestep, timestep]))
            uncond, cond = both[:1], both[1:]
            return uncond + guidance_scale * (cond - uncond)

        return model_fn

    # torch
    with torch.no_grad():
        context_t = tiny_model.text(torch.from_numpy(ids), torch.from_numpy(mask))

    def torch_unet(latent: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = tiny_model.unet(torch.from_numpy(latent), torch.from_numpy(timestep), encoder_hidden_states=context_t)
        return out.sample.numpy()

    # ONNX Runtime
    context_o = _session(tiny_pack / "text_encoder.onnx").run(None, {"input_ids": ids, "attention_mask": mask})[0]
    unet_session = _session(tiny_pack / "unet.onnx")

    def ort_unet(latent: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        return unet_session.run(None, {"sample": latent, "timestep": timestep, "context": context_o})[0]

    finals = []
    for unet in (torch_unet, ort_unet):
        steps = list(sample(sampler, guided(unet), noise, m.schedule, 20))
        assert len(steps) == 20
        finals.append(steps[-1].latent)
    with torch.no_grad():
        image_t = decode_from_diffusion(tiny_model.vae, torch.from_numpy(finals[0]), m.latent.scaling_factor).numpy()
    image_o = _session(tiny_pack / "vae_decoder.onnx").run(None, {"latent": finals[1]})[0]
    psnr = _psnr(image_t, image_o)
    latent_diff = float(np.abs(finals[0] - finals[1]).max())
    print(f"\n{sampler}: 20 steps, guidance 4: final latent max diff {latent_diff:.2e}, image PSNR {psnr:.1f} dB")
    assert psnr >= 40.0


def _token_cosine(a: np.ndarray, b: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Cosine between two (B, T, D) contexts at each real (unpadded) token: a flat array."""
    return (a * b).sum(-1)[real] / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))[real]


def test_text_encoder_int8_stays_close_and_shrinks(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The int8 text encoder gives nearly the same context (cosine per token) in a smaller file."""
    from engine.pack import load_pack
    from engine.runtime import OrtBackend
    from engine.text import WordPieceTokenizer
    from training.export_onnx import export_pack

    full = load_pack(export_pack(tiny_checkpoint, tmp_path / "fp32"))
    small = load_pack(export_pack(tiny_checkpoint, tmp_path / "int8", text_int8=True))
    assert small.manifest.files["text_encoder.onnx"].size < full.manifest.files["text_encoder.onnx"].size
    assert small.manifest.files["unet.onnx"].sha256 == full.manifest.files["unet.onnx"].sha256
    text = full.manifest.text
    tokens = WordPieceTokenizer(full.path("vocab.txt"), lowercase=text.lowercase, max_tokens=text.max_tokens)
    batch = tokens.encode_batch(["Normal chest radiograph", "Large left pleural effusion", ""])
    a = OrtBackend(full, requested="cpu").encode_text(batch.input_ids, batch.attention_mask)
    b = OrtBackend(small, requested="cpu").encode_text(batch.input_ids, batch.attention_mask)
    real = batch.attention_mask.astype(bool)
    cosine = _token_cosine(a, b, real)
    # A random 32-wide, 2-layer encoder quantises worse than MiniLM (one token at 0.93 with
    # transformers 5.24's initialisation); the shipped encoder is held to 0.99 in the next test.
    assert cosine.mean() > 0.97 and cosine.min() > 0.9, (cosine.mean(), cosine.min())
    assert not b[~real].any()  # pads stay exactly zero


def test_int8_minilm_stays_aligned_with_fp32(tmp_path: Path) -> None:
    """The exporter's int8 text encoder (per-channel) on the real MiniLM + the default model's
    projection, and the shipped pack's, against fp32 torch: per-token cosine of the context."""
    from training.checkpoint import load_checkpoint
    from training.export_onnx import export_graph, graph_modules, quantize_int8
    from training.from_pack import checkpoint_from_pack
    from training.models.config import cpu_config

    root = Path(__file__).resolve().parents[2] / "resources" / "models" / "default"
    model = load_checkpoint(checkpoint_from_pack(root, tmp_path / "ckpt", cpu_config()))
    path = tmp_path / "text_encoder.onnx"
    onnx.save_model(export_graph(*graph_modules(model)["text_encoder.onnx"]), path)
    quantize_int8(path)
    prompts = [
        "Normal chest radiograph",
        "Paediatric chest radiograph: right lower lobe consolidation.",
        "PA chest radiograph of a 61-year-old woman: cardiomegaly. No pneumothorax.",
        "",
    ]
    ids, mask = model.text.tokenize(prompts)
    with torch.no_grad():
        expected = model.text(ids, mask).numpy()
    real = mask.numpy().astype(bool)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    # The shipped v1 pack was quantised per tensor (measured 0.961 mean, 0.883 worst); re-quantised
    # per channel it scored 0.990 / 0.971 and evaluated no better (resources/model_cards/
    # pediatric-cpu-text-int8.md), so it still ships and is held to its own, lower bar.
    bars = {"exporter": (0.985, 0.95), "shipped v1": (0.95, 0.85)}
    for name, onnx_path in (("exporter", path), ("shipped v1", root / "text_encoder.onnx")):
        got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        cosine = _token_cosine(got, expected, real)
        print(f"\n{name} int8 vs fp32: cosine per token mean {cosine.mean():.4f}, worst {cosine.min():.4f}")
        mean, worst = bars[name]
        assert cosine.mean() > mean and cosine.min() > worst, (name, cosine.mean(), cosine.min())
        assert not got[~real].any()
