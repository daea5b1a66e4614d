"""Synthetic data sets (engine.synthetic): the seed rule, shards that add up to the unsharded set,
resuming a stopped shard, and folders that hold another plan."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import synthetic
from engine.manifest import read_manifest
from engine.pack import load_pack
from engine.pipeline import GenerationRequest, Pipeline

PROMPTS = ("Normal chest radiograph", "PA chest radiograph: left pleural effusion, no pneumothorax")


@pytest.fixture(scope="module")
def pipeline(tiny_pack_dir: Path) -> Pipeline:
    return Pipeline(load_pack(tiny_pack_dir), provider="cpu")


def _plan(pipeline: Pipeline, **settings: object) -> synthetic.DatasetPlan:
    defaults: dict[str, object] = {"seed": 7, "batch": 2, "num_steps": 2}
    return synthetic.plan_for(pipeline, PROMPTS, 3, **{**defaults, **settings})


def _images(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((folder / "images").glob("*.png"))}


def test_batches_never_span_two_prompts_and_the_seed_rule_holds(pipeline: Pipeline) -> None:
    plan = _plan(pipeline)
    assert plan.batches() == [[0, 1], [2], [3, 4], [5]]
    items, request = plan.request(2)
    assert items == [3, 4]
    assert request.prompt == PROMPTS[1] and request.seeds() == [7 + 3, 7 + 4] and request.num_steps == 2
    record = plan.record(4)
    assert record.findings["pleural_effusion"] == "present" and record.findings["pneumothorax"] == "absent"
    assert record.view == "PA" and record.label == "seed 11" and record.image == "images/0000004.png"


def test_shards_together_write_the_unsharded_set(pipeline: Pipeline, tmp_path: Path) -> None:
    plan = _plan(pipeline)
    whole = tmp_path / "whole"
    synthetic.make_shard(pipeline, whole, plan)
    assert synthetic.merge(whole) is not None
    sharded = tmp_path / "sharded"
    synthetic.make_shard(pipeline, sharded, plan, (1, 3))
    assert synthetic.merge(sharded) is None  # shards 0 and 2 are missing
    assert not (sharded / synthetic.MANIFEST_FILE).exists()
    synthetic.make_shard(pipeline, sharded, plan, (0, 3))
    synthetic.make_shard(pipeline, sharded, plan, (2, 3))
    assert synthetic.merge(sharded) is not None

    a, b = _images(whole), _images(sharded)
    assert list(a) == [f"{i:07d}.png" for i in range(6)] and list(a) == list(b)
    for name in a:
        assert a[name].dtype == np.uint16 and np.array_equal(a[name], b[name]), name
    assert read_manifest(whole / "manifest.jsonl") == read_manifest(sharded / "manifest.jsonl")
    # and item 4 is what `generate --seed 11` makes alone
    alone = pipeline.generate(GenerationRequest(prompt=PROMPTS[1], seed=11, num_steps=2)).to_uint16()[0]
    assert np.array_equal(alone, a["0000004.png"])


def test_a_stopped_shard_resumes_without_redoing_finished_batches(pipeline: Pipeline, tmp_path: Path) -> None:
    plan = _plan(pipeline)
    out = tmp_path / "set"
    synthetic.make_shard(pipeline, out, plan, (0, 2))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert sorted(before) == ["0000000.png", "0000001.png", "0000003.png", "0000004.png"]  # batches [0, 1], [3, 4]
    (out / "images" / "0000004.png").unlink()  # as if shard 0 was killed inside its second batch
    seen: list[synthetic.ShardProgress] = []
    synthetic.make_shard(pipeline, out, plan, (0, 2), on_batch=seen.append)
    assert [s.images for s in seen] == [0, 2]  # batch [0, 1] skipped, batch [3, 4] made again
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert after["0000000.png"] == before["0000000.png"] and after["0000001.png"] == before["0000001.png"]


def test_a_folder_of_another_plan_is_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "set"
    synthetic.prepare(out, _plan(pipeline))
    with pytest.raises(synthetic.DatasetError, match="holds another data set"):
        synthetic.make_shard(pipeline, out, _plan(pipeline, seed=8))
    assert list((out / "images").iterdir()) == []


def test_a_shard_that_finds_another_shard_preparing_the_folder_joins_it(pipeline: Pipeline, tmp_path: Path) -> None:
    """Under torchrun every rank prepares the same folder at once: one that finds only what another's
    prepare makes (an empty images/ and the plan's temporary file) must not call the folder foreign
    (CI saw "is not empty and holds no dataset.json" from rank 1)."""
    out = tmp_path / "set"
    (out / "images").mkdir(parents=True)
    (out / f".{synthetic.PLAN_FILE}.x1y2.tmp").write_text("{", encoding="utf-8")
    synthetic.prepare(out, _plan(pipeline))
    assert (out / synthetic.PLAN_FILE).is_file()
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    (other / "images" / "00000.png").write_bytes(b"x")
    with pytest.raises(synthetic.DatasetError, match="is not empty and holds no"):
        synthetic.prepare(other, _plan(pipeline))


def test_slices_of_two_shard_counts_do_not_merge(pipeline: Pipeline, tmp_path: Path) -> None:
    plan = _plan(pipeline)
    out = tmp_path / "set"
    synthetic.make_shard(pipeline, out, plan, (0, 1))
    synthetic.make_shard(pipeline, out, plan, (0, 2))
    with pytest.raises(synthetic.DatasetError, match="also in another shard's slice"):
        synthetic.merge(out)


@pytest.mark.parametrize("text", ["", "3", "3/3", "-1/2", "a/b", "1/0"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(synthetic.DatasetError, match="shard must be K/N"):
        synthetic.parse_shard(text)


def test_torchrun_rank_and_world_size_pick_the_shard() -> None:
    assert synthetic.shard_from_environment({}) is None
    assert synthetic.shard_from_environment({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == (2, 4)
    with pytest.raises(synthetic.DatasetError, match="RANK and WORLD_SIZE"):
        synthetic.shard_from_environment({"RANK": "1"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"batch": 0}, "batch must be"), ({"seed": -1}, "seed must be"), ({"count": 0}, "count must be")],
)
def test_bad_plans_are_refused(pipeline: Pipeline, settings: dict, message: str) -> None:
    count = settings.pop("count", 3)
    with pytest.raises(synthetic.DatasetError, match=message):
        synthetic.plan_for(pipeline, PROMPTS, count, **settings)


def _cli(*args: str) -> list[str]:
    exe = shutil.which("cxr-studio", path=str(Path(sys.executable).parent))
    assert exe, "the cxr-studio command is not installed in this environment"
    return [exe, *args]


def test_make_dataset_under_torchrun_writes_the_unsharded_set(tiny_pack_dir: Path, tmp_path: Path) -> None:
    """Two processes started by torchrun (RANK / WORLD_SIZE) each make their slice; the merged
    manifest and every image equal those of one process."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    common = ["--prompts", str(prompts), "--count", "3", "--steps", "2", "--batch", "2", "--seed", "7",
              "--model", str(tiny_pack_dir), "--provider", "cpu", "--quiet"]  # fmt: skip
    one = subprocess.run(_cli("make-dataset", *common, "--out", str(tmp_path / "one")), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).parent / "torchrun"
    launch = [str(torchrun), "--nproc_per_node", "2", "--master_port", "0", "--no-python", *_cli("make-dataset")]
    two = subprocess.run([*launch, *common, "--out", str(tmp_path / "two")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    slices = sorted(p.name for p in (tmp_path / "two").glob("shard-*.jsonl"))
    assert slices == ["shard-0-of-2.jsonl", "shard-1-of-2.jsonl"]
    assert read_manifest(tmp_path / "one" / "manifest.jsonl") == read_manifest(tmp_path / "two" / "manifest.jsonl")
    a, b = _images(tmp_path / "one"), _images(tmp_path / "two")
    assert list(a) == list(b) and all(np.array_equal(a[n], b[n]) for n in a)


def test_make_dataset_refuses_a_folder_that_holds_other_files(tiny_pack_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Normal chest radiograph\n", encoding="utf-8")
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not ours")
    result = subprocess.run(
        _cli(
            "make-dataset", "--prompts", str(prompts), "--count", "1", "--out", str(out), "--model", str(tiny_pack_dir)
        ),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "choose a new or empty folder" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
