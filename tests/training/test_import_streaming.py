"""Importers at scale (issue 20 item 2): the label tables' shared row loop, and imports that stream."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        assert cv2.imwrite(str(folder / name), rng.integers(0, 255, (40, 36), dtype=np.uint8))


def test_nih_names_its_malformed_and_duplicate_rows_as_hannover_does(tmp_path: Path) -> None:
    """One row loop (importers.common.table_rows) for NIH and Hannover: NIH now names the rows it
    skips (table and line), as Hannover always did."""
    from training.data.importers.run import run_import

    names = [f"0000000{i}_000.png" for i in range(1, 4)]
    _images(tmp_path / "images", names)
    table = tmp_path / "Data_Entry_2017.csv"
    table.write_text(
        NIH_HEADER + f"{names[0]},Cardiomegaly,0,1,50,F,PA\n{names[1]},No Finding,0,2\n"
        f"{names[2]},No Finding,0,3,40,M,AP\n{names[2]},Effusion,0,3,40,M,AP\n",
        encoding="utf-8",
    )
    summary, result = run_import("nih", [table, tmp_path / "images"], tmp_path / "m.jsonl")
    assert summary.skipped == Counter({"malformed row": 1, "duplicate row": 1})
    assert result.skipped_items == [
        ("Data_Entry_2017.csv, line 3", "malformed row"),
        ("Data_Entry_2017.csv, line 5", "duplicate row"),
    ]
    assert len(summary.records) == 2  # the first row of an image wins


def _alive_records() -> int:
    import gc

    from engine.manifest import ManifestRecord

    gc.collect()
    return sum(type(o) is ManifestRecord for o in gc.get_objects())


def test_an_import_streams_its_records_into_the_manifest(tmp_path: Path, monkeypatch) -> None:
    """No list of records: while the manifest is written, a few records are alive, not the import's 12."""
    from engine.manifest import read_manifest, split_of
    from training.data.importers import run

    names = [f"chest{i:02d}.png" for i in range(12)]
    _images(tmp_path / "images", names)
    table = tmp_path / "table.csv"
    table.write_text("path,text,patient_id\n" + "".join(f"images/{n},Cardiomegaly.,P{i // 2}\n" for i, n in
                                                         enumerate(names)), encoding="utf-8")  # fmt: skip
    alive: list[int] = []
    write = run.write_manifest

    def watched(path, records):  # what write_manifest is given, watched as it writes
        def each():
            for record in records:
                alive.append(_alive_records())
                yield record

        return write(path, each())

    monkeypatch.setattr(run, "write_manifest", watched)
    before = _alive_records()
    summary, _ = run.run_import("csv", [table], tmp_path / "m.jsonl", val_frac=0.2, test_frac=0.2)
    assert len(alive) == 12 and max(alive) - before <= 3  # the importer's, its split copy, the last written
    records = read_manifest(tmp_path / "m.jsonl")
    assert [r.image for r in records] == [f"images/{n}" for n in names]
    assert [r.split for r in records] == [split_of(f"P{i // 2}", seed=0, val_frac=0.2, test_frac=0.2)
                                          for i in range(12)]  # fmt: skip
    assert summary.split_counts() == {s: (sum(r.split == s for r in records), len({r.patient_id for r in records
                                      if r.split == s})) for s in ("train", "val", "test")}  # fmt: skip
    assert len(summary.records) == 12 and "12 images, 6 patients" in summary.format()
    # --limit stops the stream; an import with no record writes nothing and keeps an earlier manifest
    summary, _ = run.run_import("csv", [table], tmp_path / "m.jsonl", run.ImportOptions(limit=4))
    assert len(read_manifest(tmp_path / "m.jsonl")) == 4 == len(summary.records)
    (tmp_path / "none.csv").write_text("path,text\nimages/missing.png,Cardiomegaly.\n", encoding="utf-8")
    summary, _ = run.run_import("csv", [tmp_path / "none.csv"], tmp_path / "m.jsonl")
    assert not summary.records and len(read_manifest(tmp_path / "m.jsonl")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "m.jsonl", "none.csv", "table.csv"]
