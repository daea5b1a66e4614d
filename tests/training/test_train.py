"""Training: data loading, metrics, the loop's pieces, and tiny VAE / diffusion runs through the CLI
and the API (kill -9 and exact resume, early stopping, export to a pack that generates)."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import REPO, shared_data_dir
from training import train_cli
from training.checkpoint import load_checkpoint
from training.datasets import (
    NO_AUGMENTATION,
    Augmentation,
    DatasetError,
    augment,
    load_image,
    random_crop,
    read_manifest,
)
from training.loop import BatchOrder, EarlyStopping, load_optimizer_state, lr_at, optimizer_state
from training.options import TrainingError
from training.run_folder import MetricsLog, RunFolder
from training.train_diffusion import DiffusionOptions, train_diffusion
from training.train_vae import VAEOptions, psnr, ssim, train_vae

CAPTIONS = ("Normal chest radiograph", "Cardiomegaly", "Cardiomegaly with small left pleural effusion")


# --------------------------------------------------------------------------- synthetic data


def _chest(index: int, rng: np.random.Generator) -> np.ndarray:
    """A 40x36 float32 'radiograph' in [0, 255]: two lung fields and a heart on the image's right."""
    image = np.full((40, 36), 20, np.float32)
    cv2.ellipse(image, (11, 20), (6, 13), 0, 0, 360, 150 + 5 * (index % 5), -1)
    cv2.ellipse(image, (25, 20), (6, 13), 0, 0, 360, 150, -1)
    cv2.circle(image, (22, 26), 5 + 2 * (index % 3), 230, -1)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255)


def _line(image: str, text: str, split: str = "train", **extra: object) -> dict:
    """A manifest record as the importers write it (engine.manifest's required keys)."""
    record = {"image": image, "text": text, "findings": {}, "patient_id": "P1", "view": "PA", "split": split}
    return {**record, "source": "csv", **extra}


def make_dataset(folder: Path, count: int = 24) -> Path:
    """``count`` images (8-bit JPEG and 16-bit PNG alternately) and a manifest: 3 in 4 train, 1 in 4 val."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        image = _chest(i, rng)
        if i % 2:
            name = f"images/chest{i:02d}.png"
            data = np.round(image * 257).astype(np.uint16)
        else:
            name = f"images/chest{i:02d}.jpg"
            data = np.round(image).astype(np.uint8)
        (folder / "images").mkdir(exist_ok=True)
        assert cv2.imwrite(str(folder / name), data)
        split = "val" if i % 4 == 0 else "train"
        lines.append(json.dumps(_line(name, CAPTIONS[i % 3], split, patient_id=f"P{i:02d}")))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def config_file(tiny_checkpoint: Path) -> Path:
    """The tiny config with the tiny random BERT (a FILE.json config with a relative encoder folder)."""
    return tiny_checkpoint / "config.json"


def _common(dataset: Path, out: Path, config: Path | None = None) -> dict:
    common = {"data": str(dataset), "out": str(out), "batch_size": 4, "quiet": True, "workers": 2}
    return {**common, "config": str(config)} if config else common


@pytest.fixture(scope="module")
def vae_run(dataset: Path, config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    train_vae(VAEOptions(**_common(dataset, out, config_file), steps=8, checkpoint_every=4, log_every=2))
    return out


def _diffusion(dataset: Path, vae: Path, out: Path, **overrides) -> DiffusionOptions:
    values = {**_common(dataset, out), "vae": str(vae), "steps": 20, "checkpoint_every": 5, "log_every": 1}
    return DiffusionOptions(**{**values, **overrides})


def _cli_args(options: DiffusionOptions) -> list[str]:
    """The flags of ``train diffusion`` for ``options`` (the fields tests set)."""
    args = ["train", "diffusion", "--data", options.data, "--out", options.out, "--vae", options.vae]
    for name in ("steps", "batch_size", "checkpoint_every", "log_every", "workers", "seed", "lr"):
        args += [f"--{name.replace('_', '-')}", str(getattr(options, name))]
    return [*args, "--quiet"]


# --------------------------------------------------------------------------- data


def test_manifest_reads_known_keys_and_resolves_paths(dataset: Path) -> None:
    manifest = read_manifest(dataset)
    assert len(manifest.records) == 24
    assert manifest.counts() == {"train": 18, "val": 6, "test": 0}
    assert all(Path(r.image).is_absolute() and Path(r.image).is_file() for r in manifest.records)
    assert manifest.records[1].text == CAPTIONS[1]


GOOD = json.dumps(_line("a.png", "x"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no records"),
        ('{"image": "a.png", "text": "x"}\n', "line 1: missing key(s) findings, patient_id, view, split, source"),
        ("\n" + GOOD.replace('"train"', '"dev"') + "\n", "line 2: split must be one of train, val, test, not 'dev'"),
        (GOOD.replace('"x"', "3") + "\n", "text must be a non-empty string, not 3"),
        ("not json\n", "line 1: not JSON (Expecting value"),
        (b"\xff\xfe\n", "cannot be read as UTF-8 text"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DatasetError, match=None) as info:
        read_manifest(path)
    assert message in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        GOOD,
        json.dumps({"image": "a.png", "text": "x", "split": "train"}),  # the keys the old training reader needed
        json.dumps(_line("a.png", "x", typo="y")),  # an unknown key
        json.dumps(_line("a.png", "x", view="OBLIQUE")),
        json.dumps(_line("a.png", "x", findings={"cardiomegaly": "maybe"})),
        json.dumps(_line("a.png", "x", age=500)),
        json.dumps(_line("", "x")),
        json.dumps(_line("a.png", "x", source=3)),
        '{"image": ' + "[" * 100_000 + "]" * 100_000 + "}",  # nested deeper than json can recurse
    ],
    ids=range(9),
)
def test_training_accepts_exactly_the_lines_the_engine_accepts(tmp_path: Path, line: str) -> None:
    """One reader: a line the engine (and so the dataset explorer) rejects is rejected by training too."""
    from engine.manifest import ManifestError
    from engine.manifest import read_manifest as engine_read_manifest

    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    try:
        engine_read_manifest(path)
    except ManifestError as exc:
        with pytest.raises(DatasetError) as info:
            read_manifest(path)
        assert str(info.value) == str(exc)
    else:
        (record,) = read_manifest(path).records
        assert record.image == str(tmp_path.resolve() / "a.png")


def test_load_image_8_and_16_bit_crop_and_resize(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))  # 48x64: the centre 48x48 is kept
    cv2.imwrite(str(tmp_path / "a.png"), np.round(gradient * 65535).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "b.png"), np.round(gradient * 255).astype(np.uint8))
    wide = load_image(tmp_path / "a.png", 16)
    narrow = load_image(tmp_path / "b.png", 16)
    assert wide.shape == (1, 16, 16) and wide.dtype == np.float32
    assert wide.min() >= -1 and wide.max() <= 1
    np.testing.assert_allclose(wide, narrow, atol=2.5 / 255)
    expected = (9 + 3 * np.arange(16)) / 63 * 2 - 1  # columns 8..55 of 64, 3 averaged per pixel
    np.testing.assert_allclose(wide[0, 0], expected, atol=1e-4)
    with pytest.raises(DatasetError, match="no such file"):
        load_image(tmp_path / "missing.png", 16)


def test_augment_is_seeded_and_never_flips() -> None:
    image = torch.full((8, 1, 32, 32), -1.0)
    image[:, :, 8:24, 18:30] = 1.0  # bright "heart" on the right half
    out = augment(image, torch.Generator().manual_seed(1), Augmentation())
    again = augment(image, torch.Generator().manual_seed(1), Augmentation())
    assert torch.equal(out, again)
    assert not torch.equal(out, image)
    assert (out[..., 16:].mean(dim=(1, 2, 3)) > out[..., :16].mean(dim=(1, 2, 3)) + 0.3).all()
    assert torch.equal(augment(image, torch.Generator(), NO_AUGMENTATION), image)


def test_random_crop_is_seeded_and_takes_windows_of_the_image() -> None:
    images = torch.arange(4 * 32 * 32, dtype=torch.float32).view(4, 1, 32, 32)
    out = random_crop(images, 16, torch.Generator().manual_seed(2))
    assert out.shape == (4, 1, 16, 16)
    assert torch.equal(out, random_crop(images, 16, torch.Generator().manual_seed(2)))
    for image, crop in zip(images, out, strict=True):
        top, left = divmod(int(crop[0, 0, 0] - image[0, 0, 0]), 32)
        assert torch.equal(crop, image[:, top : top + 16, left : left + 16])
    assert len({int(c[0, 0, 0]) % 1024 for c in out}) > 1  # not the same window for all
    assert random_crop(images, 32, torch.Generator()) is images
    with pytest.raises(ValueError, match="crop size 33 does not fit images of 32x32"):
        random_crop(images, 33, torch.Generator())


def test_vae_trains_on_crops_and_validates_on_whole_images(dataset: Path, config_file: Path, tmp_path: Path) -> None:
    options = VAEOptions(**_common(dataset, tmp_path / "run", config_file), steps=2, checkpoint_every=2, crop=16)
    result = train_vae(options)
    assert result.step == 2 and math.isfinite(result.best_val_loss)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_psnr" in r for r in records)


def test_sample_prompts_spread_over_different_findings(tmp_path: Path) -> None:
    from training.diffusion_setup import sample_prompts

    texts = [
        "Chest radiograph: no effusion. No focal consolidation. Normal heart size.",
        "Chest radiograph: no focal consolidation. Normal heart size. No effusion.",
        "Chest radiograph: normal heart size. No effusion.",
        "Chest radiograph: patchy bilateral opacities consistent with viral pneumonia.",
        "Chest radiograph: findings consistent with bacterial pneumonia.",
    ]
    lines = [json.dumps(_line(f"{i}.png", t)) for i, t in enumerate(texts)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    manifest = read_manifest(tmp_path / "m.jsonl")
    assert sample_prompts(manifest, 2) == [texts[0], texts[3]]  # a finding, not a rephrased normal
    assert sample_prompts(manifest, 3) == [texts[0], texts[3], texts[4]]
    assert len(sample_prompts(manifest, 10)) == 5


def test_cpu_preset_keeps_the_default_geometry_with_smaller_networks() -> None:
    from training.checkpoint import build_model
    from training.loop import resolve_config
    from training.models.config import default_config

    cpu, default = resolve_config("cpu"), default_config()
    for key in ("image_size", "latent_channels", "downsample_factor", "schedule", "text"):
        assert getattr(cpu, key) == getattr(default, key), key
    model = build_model(cpu)
    count = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("vae", "unet")}
    assert 2.0e6 < count["vae"] < 3.5e6 and 5e6 < count["unet"] < 9e6, count
    assert not cpu.vae.mid_block_attention


# --------------------------------------------------------------------------- metrics and loop pieces


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """skimage's gaussian SSIM (sigma 1.5, truncate 3.5 -> 11 taps, population statistics, crop 5)."""
    from scipy.ndimage import gaussian_filter

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, sigma=1.5, truncate=3.5, mode="reflect")

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index[5:-5, 5:-5].mean())


def test_ssim_matches_reference_and_psnr() -> None:
    rng = np.random.default_rng(0)
    clean = cv2.GaussianBlur(rng.random((40, 48)).astype(np.float32), (0, 0), 2.0)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    a, b = torch.from_numpy(clean)[None, None], torch.from_numpy(noisy)[None, None]
    assert ssim(a, b).item() == pytest.approx(_ssim_reference(clean, noisy), abs=1e-5)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    mse = float(np.mean((clean - noisy) ** 2))
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)


def test_lr_schedule_warmup_then_cosine() -> None:
    lrs = [lr_at(s, base_lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for s in range(1, 111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[59] == pytest.approx(0.55)  # half-way through the cosine
    assert lrs[-1] == pytest.approx(0.1)
    assert all(x >= y for x, y in itertools.pairwise(lrs[9:]))


def test_batch_order_is_a_seeded_permutation_per_epoch_and_resumes() -> None:
    order = BatchOrder(10, 3, seed=7, device=torch.device("cpu"))
    batches = [order.next() for _ in range(7)]  # 3 batches per epoch, one item dropped
    first = torch.cat(batches[:3])
    assert len(set(first.tolist())) == 9
    assert not torch.equal(torch.cat(batches[3:6]), first)
    again = BatchOrder(10, 3, seed=7, device=torch.device("cpu"))
    again.load_state({"epoch": 1, "batch": 2})
    assert torch.equal(again.next(), batches[5])
    with pytest.raises(TrainingError, match="larger than the training split"):
        BatchOrder(2, 3, seed=0, device=torch.device("cpu"))


def test_optimizer_state_round_trips_without_pickle() -> None:
    param = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones_like(param)
    optimizer.step()
    tensors, meta = optimizer_state(optimizer)
    json.dumps(meta)  # everything but tensors is JSON
    other = torch.optim.AdamW([torch.nn.Parameter(param.detach().clone())], lr=0.5)
    load_optimizer_state(other, tensors, json.loads(json.dumps(meta)))
    assert other.param_groups[0]["lr"] == 0.1
    state = next(iter(other.state.values()))
    assert torch.equal(state["exp_avg"], optimizer.state[param]["exp_avg"])


def test_early_stopping_patience() -> None:
    early = EarlyStopping(patience=2)
    assert early.update(1.0, 1) and not early.update(1.0, 2) and not early.should_stop
    assert not early.update(1.5, 3) and early.should_stop
    assert EarlyStopping(patience=0, bad_evals=9).should_stop is False


def test_run_folder_publish_and_recover_an_interrupted_swap(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)

    def write(step: int):
        def go(folder: Path) -> None:
            folder.mkdir()
            (folder / "config.json").write_text(str(step))

        return go

    run.publish("checkpoint", write(1))
    # killed between "checkpoint -> .checkpoint.old" and ".checkpoint.tmp -> checkpoint"
    write(2)(tmp_path / ".checkpoint.tmp")
    os.rename(tmp_path / "checkpoint", tmp_path / ".checkpoint.old")
    run.recover()
    assert (tmp_path / "checkpoint" / "config.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    # killed while writing the new one: the old one stays
    (tmp_path / ".checkpoint.tmp").mkdir()
    run.recover()
    assert (tmp_path / "checkpoint" / "config.json").read_text() == "2"


def test_state_files_of_older_steps_are_removed_after_the_index(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.save_state(5, {"model": {"w": torch.ones(2)}}, {"note": 5})
    (run.state_dir / ".model-00000010.safetensors.abc.tmp").write_bytes(b"half")  # a killed write
    run.save_state(10, {"model": {"w": torch.full((2,), 2.0)}}, {"note": 10})
    assert sorted(p.name for p in run.state_dir.iterdir()) == ["index.json", "model-00000010.safetensors"]
    state = run.load_state()
    assert state.step == 10 and state.meta["note"] == 10
    assert torch.equal(state.parts["model"]["w"], torch.full((2,), 2.0))


def test_metrics_log_truncates_records_after_a_step(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in (1, 2, 3):
        log.append({"step": step, "loss": step})
    with log.path.open("a") as handle:
        handle.write('{"step": 4, "lo')  # a line cut by a kill
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]


# --------------------------------------------------------------------------- VAE


def test_vae_run_writes_checkpoint_metrics_samples_and_scaling_factor(vae_run: Path, dataset: Path) -> None:
    records = MetricsLog(vae_run / "metrics.jsonl").read()
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6, 8]
    assert [r["step"] for r in val] == [4, 8]
    for r in val:
        assert 5 < r["val_psnr"] < 60 and 0 < r["val_ssim"] <= 1 and math.isfinite(r["val_loss"])
    assert all(r["images_per_s"] > 0 and r["lr"] > 0 for r in train)
    # the checkpoint loads, and its scaling factor gives unit-variance latents
    model = load_checkpoint(RunFolder(vae_run).best_or_last())
    assert model.config.scaling_factor != 0.5  # not the tiny config's placeholder
    images = torch.from_numpy(np.stack([load_image(r.image, 32) for r in read_manifest(dataset).split("train")]))
    with torch.no_grad():
        posterior = model.vae.encode(images).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(3))
    assert (z * model.config.scaling_factor).std().item() == pytest.approx(1.0, rel=0.05)
    assert (vae_run / "state" / "index.json").is_file()
    assert not list(vae_run.glob(".*"))  # no temporary folders left


def _vae_cli_args(options: VAEOptions) -> list[str]:
    """The flags of ``train vae`` for ``options`` (the fields tests set)."""
    args = ["train", "vae", "--data", options.data, "--out", options.out, "--config", str(options.config)]
    for name in ("steps", "batch_size", "checkpoint_every", "log_every", "workers", "seed", "lr"):
        args += [f"--{name.replace('_', '-')}", str(getattr(options, name))]
    return [*args, "--quiet"]


def _kill_when(argv: list[str], ready: Path, log: Path) -> None:
    """Run ``cxr-studio ARGV`` in a subprocess and SIGKILL it once ``ready`` exists."""
    with log.open("wb") as output:
        # the same torch thread count as this process: float sums depend on it
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *argv], cwd=REPO, stdout=output, stderr=output, env=env
        )
        try:
            deadline = time.monotonic() + 240
            while not ready.is_file() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert process.poll() is None, log.read_text()
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def _assert_resumed_like_reference(
    tmp_path: Path, expected: dict[int, float], start: int, *, steps: int, network: str
) -> None:
    """The resumed run in tmp_path/killed: every step logged once, the losses after ``start`` and the
    final ``network`` weights equal to the uninterrupted run's in tmp_path/reference."""
    resumed = _losses(tmp_path / "killed")
    assert sorted(resumed) == list(range(1, steps + 1))
    after = range(start + 1, steps + 1)
    np.testing.assert_allclose([resumed[s] for s in after], [expected[s] for s in after], rtol=1e-5, atol=1e-7)
    final = getattr(load_checkpoint(tmp_path / "killed" / "checkpoint"), network)
    ref = getattr(load_checkpoint(tmp_path / "reference" / "checkpoint"), network)
    for (name, a), (_, b) in zip(final.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_vae_killed_with_sigkill_resumes_exactly(dataset: Path, config_file: Path, tmp_path: Path) -> None:
    # 1. an uninterrupted run
    def options(out: Path) -> VAEOptions:
        return VAEOptions(**_common(dataset, out, config_file), steps=16, checkpoint_every=4, log_every=1)

    assert train_vae(options(tmp_path / "reference")).step == 16
    expected = _losses(tmp_path / "reference")
    assert sorted(expected) == list(range(1, 17))

    # 2. the same run in a subprocess, killed with SIGKILL once its first checkpoint exists
    killed = options(tmp_path / "killed")
    _kill_when(_vae_cli_args(killed), tmp_path / "killed" / "state" / "index.json", tmp_path / "log.txt")
    run = RunFolder(tmp_path / "killed")
    run.recover()
    load_checkpoint(run.checkpoint())  # the last complete checkpoint loads
    start = run.load_state().step
    assert 4 <= start < 16

    # 3. resume: step numbers continue, losses and weights equal the uninterrupted run's
    assert train_cli.run(_parse(["train", "vae", "--out", killed.out, "--resume", "--quiet"])) == 0
    _assert_resumed_like_reference(tmp_path, expected, start, steps=16, network="vae")


def test_a_failed_run_leaves_nothing_and_the_rerun_works(dataset: Path, config_file: Path, tmp_path: Path) -> None:
    # 1. one image of the manifest is missing: the run fails while loading images, after run.json
    bad = tmp_path / "data"
    shutil.copytree(dataset.parent, bad)
    next((bad / "images").glob("*.png")).unlink()
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match="no such file"):
        train_vae(VAEOptions(**_common(bad / dataset.name, out, config_file), steps=2, checkpoint_every=2))
    assert not out.exists()
    # 2. the same folder takes the run once the data is fixed
    assert train_vae(VAEOptions(**_common(dataset, out, config_file), steps=2, checkpoint_every=2)).step == 2


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_can_be_rerun_or_resumed(
    dataset: Path, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1. killed while training, long before a checkpoint: run.json and metrics, no state
    slow = VAEOptions(**_common(dataset, tmp_path / "a", config_file), steps=100000, checkpoint_every=100000)
    _kill_when(_vae_cli_args(replace(slow, log_every=1)), tmp_path / "a" / "metrics.jsonl", tmp_path / "log.txt")
    assert (tmp_path / "a" / "run.json").is_file() and not RunFolder(tmp_path / "a").has_state()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    # 2. a rerun into the same folder starts it again
    quick = ["--steps", "2", "--checkpoint-every", "2"]
    assert train_cli.run(_parse([*_vae_cli_args(slow), *quick])) == 0, capsys.readouterr().err
    assert RunFolder(tmp_path / "a").load_state().step == 2
    # 3. so does --resume (nothing was trained: the options given now are the run's)
    argv = ["train", "vae", "--out", str(tmp_path / "b"), "--resume", "--quiet", *quick]
    assert train_cli.run(_parse(argv)) == 0, capsys.readouterr().err
    assert RunFolder(tmp_path / "b").load_state().step == 2
    assert json.loads((tmp_path / "b" / "run.json").read_text())["options"]["steps"] == 2
    # 4. a run with a saved state is still never overwritten by a rerun
    assert train_cli.run(_parse([*_vae_cli_args(slow), *quick])) == 2
    assert "already exists and is not empty; pass --resume" in capsys.readouterr().err


# --------------------------------------------------------------------------- diffusion


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in MetricsLog(run / "metrics.jsonl").read() if "loss" in r}


@pytest.mark.slow
def test_diffusion_killed_with_sigkill_resumes_exactly_and_exports(
    vae_run: Path, dataset: Path, tmp_path: Path
) -> None:
    # 1. an uninterrupted run, exported at the end
    pack = tmp_path / "pack"
    reference = _diffusion(dataset, vae_run, tmp_path / "reference", export=str(pack), export_text_int8=True)
    result = train_diffusion(reference)
    assert result.finished and result.step == 20
    expected = _losses(tmp_path / "reference")
    assert sorted(expected) == list(range(1, 21))

    # 2. the same run in a subprocess, killed with SIGKILL once its first checkpoint exists
    killed = _diffusion(dataset, vae_run, tmp_path / "killed")
    _kill_when(_cli_args(killed), tmp_path / "killed" / "state" / "index.json", tmp_path / "log.txt")
    run = RunFolder(tmp_path / "killed")
    run.recover()
    load_checkpoint(run.checkpoint())  # the last complete checkpoint loads
    start = run.load_state().step
    assert 5 <= start < 20

    # 3. resume: step numbers continue, losses equal the uninterrupted run's
    code = train_cli.run(_parse(["train", "diffusion", "--out", killed.out, "--resume", "--quiet"]))
    assert code == 0
    _assert_resumed_like_reference(tmp_path, expected, start, steps=20, network="unet")

    # 4. the exported pack generates, and its card names the data
    from engine.cli.main import main
    from engine.pack import load_pack
    from engine.pipeline import GenerationRequest, Pipeline

    loaded = load_pack(pack)
    assert "manifest.jsonl: 24 records" in loaded.manifest.card["training_data"]
    assert "'train' split" in loaded.manifest.card["training_data"]
    assert b"MatMulInteger" in loaded.path("text_encoder.onnx").read_bytes()  # --export-text-int8 took effect
    generated = Pipeline(loaded).generate(GenerationRequest(prompt=CAPTIONS[1], num_steps=4))
    assert generated.images.shape == (1, 32, 32) and np.isfinite(generated.images).all()
    assert main(["generate", CAPTIONS[0], "--model", str(pack), "--steps", "3", "--out", str(tmp_path / "a.png"),
                 "--quiet"]) == 0  # fmt: skip
    assert (tmp_path / "a.png").is_file()


def test_diffusion_early_stopping_on_flat_validation_loss(vae_run: Path, dataset: Path, tmp_path: Path) -> None:
    options = _diffusion(
        dataset, vae_run, tmp_path / "flat", lr=0.0, steps=50, val_every=2, patience=2, checkpoint_every=100
    )
    result = train_diffusion(options)
    assert result.finished and result.stop_reason == "early_stopping" and result.step == 6
    records = MetricsLog(tmp_path / "flat" / "metrics.jsonl").read()
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 3 and val[0] == val[1] == val[2]
    assert records[-1] == {"step": 6, "early_stop": True, "best_step": 2, "best_val_loss": val[0]}
    assert RunFolder(tmp_path / "flat").load_state().meta["stop_reason"] == "early_stopping"
    assert result.checkpoint == tmp_path / "flat" / "best"
    # resuming a finished run does nothing more
    again = train_diffusion(options, resume=True)
    assert again.step == 6 and len(MetricsLog(tmp_path / "flat" / "metrics.jsonl").read()) == len(records)


def test_fine_tuning_starts_from_the_earlier_model_and_adds_augmented_copies(
    vae_run: Path, dataset: Path, tmp_path: Path
) -> None:
    base = train_diffusion(_diffusion(dataset, vae_run, tmp_path / "base", steps=6, checkpoint_every=3))
    # 1. lr 0: the fine-tuned weights stay exactly the earlier model's (not the seed's fresh ones)
    messages: list[str] = []
    options = _diffusion(  # no --vae: the earlier model's VAE
        dataset, "", tmp_path / "tuned", init_from=str(tmp_path / "base"), lr=0.0, steps=3, checkpoint_every=3,
        augment_copies=2, seed=7,
    )  # fmt: skip
    result = train_diffusion(options, log=messages.append)
    before, after = load_checkpoint(base.checkpoint), load_checkpoint(result.checkpoint)
    for name, tensor in before.unet.state_dict().items():
        assert torch.equal(tensor, after.unet.state_dict()[name]), name
    for name, tensor in before.text.projection.state_dict().items():
        assert torch.equal(tensor, after.text.projection.state_dict()[name]), name
    train = sum(json.loads(line)["split"] == "train" for line in dataset.read_text().splitlines() if line.strip())
    assert any(f"cached {train} training (+ {2 * train} augmented)" in m for m in messages), messages
    record = json.loads((tmp_path / "tuned" / "run.json").read_text())
    assert record["init_checkpoint"] == str(base.checkpoint.resolve())
    # 2. copies only of the named sources (the manifest's records have none)
    messages.clear()
    options = _diffusion(
        dataset, vae_run, tmp_path / "sources", init_from=str(base.checkpoint), steps=1, augment_copies=3,
        augment_sources="nih",
    )  # fmt: skip
    train_diffusion(options, log=messages.append)
    assert any(f"cached {train} training (+ 0 augmented)" in m for m in messages), messages
    # 3. bad values are refused before anything is written
    with pytest.raises(TrainingError, match="--augment-copies"):
        _diffusion(dataset, vae_run, tmp_path / "x", augment_copies=-1)
    with pytest.raises(TrainingError, match=r"--init-from .*not a checkpoint folder"):
        train_diffusion(_diffusion(dataset, vae_run, tmp_path / "y", init_from=str(tmp_path)))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# --------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cxr-studio")
    train_cli.register_train(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such manifest file"),
        ("empty", "no records (an empty manifest)"),
        ("config", "--config 'huge': not 'tiny', 'cpu', 'default' or an existing JSON file"),
        ("crop", "--crop 30: must be at most the image size 32 and a multiple of the downsample factor 4"),
        ("exists", "already exists and is not empty; pass --resume"),
        ("resume", "nothing to resume"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    case: str, message: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli.main import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    data = {"missing": tmp_path / "nope.jsonl", "empty": empty}.get(case, dataset)
    out = tmp_path / ("full" if case == "exists" else "run")
    argv = ["train", "vae", "--data", str(data), "--out", str(out), "--config", "huge" if case == "config" else "tiny"]
    argv += ["--crop", "30"] if case == "crop" else []
    code = main([*argv, "--resume"] if case == "resume" else argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("cxr-studio train vae: error: ") and message in err
    assert not (tmp_path / "run").exists()


def test_cli_resume_refuses_changed_settings(vae_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = train_cli.run(_parse(["train", "vae", "--out", str(vae_run), "--resume", "--lr", "0.1"]))
    assert code == 2
    assert "--lr is 0.1 but" in capsys.readouterr().err


def test_cli_help_defaults_match_the_options() -> None:
    for kind, cls in (("vae", VAEOptions), ("diffusion", DiffusionOptions)):
        defaults = {f.name: f.default for f in fields(cls)}
        for name, value in train_cli._defaults(kind).items():
            assert defaults[name] == value, (kind, name)


# --------------------------------------------------------------------------- real data (when present)


@pytest.mark.needs_shared_data
def test_pediatric_images_load_at_224(tmp_path: Path) -> None:
    root = shared_data_dir() / "pediatric-cxr"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"{root}: not present")
    rows = (root / "labels.csv").read_text().splitlines()[1:5]
    lines = [json.dumps(_line(str(root / "images" / row.split(",")[0]), row.split(",")[1])) for row in rows]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    manifest = read_manifest(tmp_path / "m.jsonl")
    image = load_image(manifest.records[0].image, 224)
    assert image.shape == (1, 224, 224) and image.min() >= -1 and image.max() <= 1 and image.std() > 0.1
