"""The GPU benchmark and its device kit work before a GPU is lent (the lease is short and rare).

bench_gpu.py runs its whole code path on the CPU with the tiny model (``--device cpu``): every
variant that can run on a CPU must run and make the peer's image, the others must be skipped with
their reason, and the launch-bound floor must be the printed kernel count times the launch cost.
Timings are not judged here (benchmarks are not timed tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "tests" / "benchmarks"
CPU_VARIANTS = {"peer-eager-fp32", "engine-torch-eager", "engine-ort-fp32"}
GPU_ONLY = {"peer-eager-fp16", "engine-torch-graphs", "engine-ort-fp16"}


@pytest.mark.slow
def test_bench_gpu_runs_every_cpu_variant_and_prints_the_floor(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, str(BENCH / "bench_gpu.py"), "--device", "cpu", "--config", "tiny"]
    done = subprocess.run(
        [*command, "--steps", "2", "--runs", "1", "--json", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))["configs"]["tiny"]
    variants = figures["variants"]
    assert set(variants) == CPU_VARIANTS | GPU_ONLY
    assert not [name for name, result in variants.items() if "failed" in result], done.stdout
    assert {name for name, result in variants.items() if "skipped" in result} == GPU_ONLY
    for name in CPU_VARIANTS:
        figure = variants[name]["steps"]["2"]
        assert figure["s"] > 0 and figure["min_s"] <= figure["s"]
        if name != "peer-eager-fp32":  # the same request through another runtime: the same image
            assert figure["image_diff"] < 1.0, (name, figure)
        assert f"2 steps: {name} [" in done.stdout
    kernels = figures["kernels"]
    assert kernels["unet"] > 50 and kernels["text"] > 10 and kernels["decode"] > 10
    assert kernels["generation_2"] == kernels["text"] + 2 * kernels["unet"] + kernels["decode"]
    cost = figures["launch_cost_s"]["eager"]
    assert 0 < cost < 1e-3
    assert figures["floor_s"]["2"]["eager"] == pytest.approx(kernels["generation_2"] * cost)
    assert "launch-bound floor, 2 steps" in done.stdout


def test_bench_gpu_refuses_cuda_without_a_gpu_and_unknown_variants() -> None:
    import torch

    script = str(BENCH / "bench_gpu.py")
    bad = subprocess.run([sys.executable, script, "--only", "engine-tensorrt"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown variant(s) engine-tensorrt" in bad.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    no_gpu = subprocess.run([sys.executable, script, "--device", "cuda"], capture_output=True, text=True)
    assert no_gpu.returncode == 2 and "--device cpu" in no_gpu.stderr
    nothing = subprocess.run([sys.executable, script], capture_output=True, text=True)  # as ./studio bench runs it
    assert nothing.returncode == 0 and "nothing to measure" in nothing.stdout


def test_device_kit_scripts_parse_and_explain_themselves() -> None:
    for script in ("kit.sh", "on_device.sh"):
        path = BENCH / "device" / script
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
        usage = subprocess.run(["bash", str(path)], capture_output=True, text=True)
        assert usage.returncode == 2 and "bash tests/benchmarks/device/" in usage.stderr
    size = subprocess.run(["bash", str(BENCH / "device" / "kit.sh"), "size"], capture_output=True, text=True)
    assert size.returncode == 0 and "MiB" in size.stdout


@pytest.mark.slow
def test_bench_training_steps_both_networks_in_fp32_and_bf16_on_the_same_data() -> None:
    command = [sys.executable, str(BENCH / "bench_training.py"), "--config", "tiny", "--steps", "3", "--warmup", "1",
               "--images", str(REPO / "tests" / "fixtures" / "pediatric-cxr"), "--variants", "fp32,bf16"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows: dict[str, dict[str, list[str]]] = {}
    network = ""
    for line in done.stdout.splitlines():
        if line.startswith(("vae: 3 steps", "unet: 3 steps")):
            network = line.split(":")[0]
            rows[network] = {}
        elif network and line.strip().startswith(("fp32 ", "bf16 ")):
            rows[network][line.split()[0]] = line.split()
    assert set(rows) == {"vae", "unet"}, done.stdout
    for network, table in rows.items():
        assert set(table) == {"fp32", "bf16"}, (network, done.stdout)
        assert table["fp32"][2] == "1.00x"
        # the same seeded weights, batches and noise: after 3 steps the losses differ by bf16 rounding only
        fp32_loss, bf16_loss = float(table["fp32"][3]), float(table["bf16"][3])
        assert abs(bf16_loss - fp32_loss) <= 0.02 * fp32_loss, (network, done.stdout)
