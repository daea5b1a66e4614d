"""--precision: bf16 autocast where the device has native bf16 (this CPU does), float32 on request;
runs from before the option resume in the float32 they were trained in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.test_train import _common, _parse, make_dataset
from training import precision as precision_module
from training import train_cli
from training.loop import BatchOrder, pick_precision, train_step
from training.options import TrainingError
from training.train_vae import VAEOptions, VAETask, train_vae

NATIVE_BF16 = precision_module.native_bf16(torch.device("cpu"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), count=12)


def _conv_output_dtypes(task: VAETask, options: VAEOptions) -> set[torch.dtype]:
    """The dtypes the VAE's convolutions produce during one real training step of ``task``."""
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
        for m in task.vae.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    params = [p for p in task.vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr)
    order = BatchOrder(task.num_train, options.batch_size, options.seed, torch.device("cpu"))
    loss = train_step(task, optimizer, params, order, torch.Generator().manual_seed(0), options, 1)
    for hook in hooks:
        hook.remove()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in params), "weights stay float32 under autocast"
    return seen


@pytest.mark.parametrize("name", ["auto", "fp32"])
def test_training_steps_run_in_the_precision_asked_for(
    name: str, dataset: Path, tiny_model, tmp_path: Path
) -> None:
    import copy

    options = VAEOptions(**_common(dataset, tmp_path / "run"), precision=name)
    images = torch.rand(8, 1, 32, 32) * 2 - 1
    model = copy.deepcopy(tiny_model)
    task = VAETask(model, images, images[:2], options, torch.device("cpu"))
    expected = "bf16" if name == "auto" and NATIVE_BF16 else "fp32"
    assert task.precision == expected
    dtypes = _conv_output_dtypes(task, options)
    assert dtypes == ({torch.bfloat16} if expected == "bf16" else {torch.float32})


def test_bf16_without_native_kernels_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "native_bf16", lambda device: False)
    with pytest.raises(TrainingError, match="--precision bf16: cpu has no native bf16"):
        pick_precision("bf16", torch.device("cpu"))
    assert pick_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(TrainingError, match="--precision must be one of auto, bf16, fp32"):
        VAEOptions(data="m.jsonl", out="run", precision="fp16")


def test_a_run_from_before_the_option_resumes_in_float32(
    dataset: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "old-run"
    common = {**_common(dataset, out, tiny_checkpoint / "config.json"), "steps": 4, "checkpoint_every": 2}
    train_vae(VAEOptions(**common, precision="fp32"))
    # what a run started before --precision existed looks like: no such key in run.json
    run_json = out / "run.json"
    record = json.loads(run_json.read_text())
    del record["options"]["precision"]
    run_json.write_text(json.dumps(record))

    resumed = train_cli.options_from_args(_parse(["train", "vae", "--out", str(out), "--resume"]), VAEOptions)
    assert resumed.precision == "fp32"
    assert train_cli.run(_parse(["train", "vae", "--out", str(out), "--resume"])) == 0
    if NATIVE_BF16:  # asking the old run for bf16 is a change of its settings
        code = train_cli.run(_parse(["train", "vae", "--out", str(out), "--resume", "--precision", "bf16"]))
        assert code == 2
        assert "--precision is 'bf16' but" in capsys.readouterr().err
