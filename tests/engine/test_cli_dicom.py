"""`generate --out x.dcm`, `pacs`, `send`, `outbox` and `make-studies` against dciodvfy and a real Orthanc."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from engine.cli.main import main
from tests.dicomtools import dcentvfy_errors, dciodvfy_errors, dcmdump_ok
from tests.pacs_servers import OrthancServer, orthanc_server  # noqa: F401 (fixture)


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_STUDIO_NODES", str(tmp_path / "config" / "pacs_nodes.json"))
    monkeypatch.setattr("engine.paths.user_data_dir", lambda: tmp_path / "userdata")


def _assert_valid(path: Path) -> pydicom.Dataset:
    errors, warnings = dciodvfy_errors(path)
    assert errors == [] and warnings == [], (errors, warnings)  # dciodvfy prints nothing else for our files
    assert dcmdump_ok(path)
    return pydicom.dcmread(path)


@pytest.mark.parametrize(
    ("iod", "sop_class"), [("sc", "1.2.840.10008.5.1.4.1.1.7"), ("dx", "1.2.840.10008.5.1.4.1.1.1.1")]
)
def test_generate_writes_valid_synthetic_dicom(tiny_pack_dir: Path, tmp_path: Path, iod: str, sop_class: str) -> None:
    out = tmp_path / "x.dcm"
    prompt = "Épanchement pleural gauche, no pneumothorax"
    code = main(["generate", prompt, "--model", str(tiny_pack_dir), "--steps", "2", "--seed", "5", "--quiet",
                 "--iod", iod, "--batch", "2", "--out", str(out)])  # fmt: skip
    assert code == 0
    files = [tmp_path / "x_00.dcm", tmp_path / "x_01.dcm"]
    datasets = [_assert_valid(f) for f in files]
    assert dcentvfy_errors(files)[0] == []
    first, second = datasets
    assert first.SOPClassUID == sop_class
    assert first.StudyInstanceUID == second.StudyInstanceUID and first.SeriesInstanceUID == second.SeriesInstanceUID
    assert [first.InstanceNumber, second.InstanceNumber] == [1, 2]
    assert first.SpecificCharacterSet == "ISO_IR 192" and prompt in first.ImageComments
    assert "seed 5" in first.ImageComments.replace("=", " ") or "5" in first.ImageComments
    assert first.PatientIdentityRemoved == "YES" and str(first.PatientName).startswith("SYNTHETIC")


def test_generate_refuses_unknown_output_kind(tiny_pack_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["generate", "x", "--model", str(tiny_pack_dir), "--out", str(tmp_path / "x.tif")]) == 2
    assert "--out must name a .png or .dcm file" in capsys.readouterr().err


def test_pacs_nodes_round_trip(capsys) -> None:
    assert main(["pacs", "add", "test", "--host", "127.0.0.1", "--port", "11112", "--aet", "PACSTEST"]) == 0
    assert main(["pacs", "list"]) == 0
    assert "test: PACSTEST@127.0.0.1:11112" in capsys.readouterr().out
    assert main(["pacs", "add", "bad", "--host", "127.0.0.1", "--port", "99999", "--aet", "X"]) == 2
    assert "port must be an integer from 1 to 65535" in capsys.readouterr().err
    assert main(["send", "--node", "nowhere"]) == 2
    assert "no PACS node named 'nowhere'" in capsys.readouterr().err


def test_make_studies_then_send_by_c_store_and_stow(
    tiny_pack_dir: Path,
    tmp_path: Path,
    orthanc_server: OrthancServer,  # noqa: F811
    capsys,
) -> None:
    server = orthanc_server
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# one per line\nNormal chest radiograph\nRight lower lobe consolidation\n")
    out = tmp_path / "studies"
    assert main(["pacs", "add", "orthanc", "--host", "127.0.0.1", "--port", str(server.dicom_port),
                 "--aet", server.aet, "--dicomweb-url", server.dicomweb_url, "--user", server.user,
                 "--password", server.password]) == 0  # fmt: skip
    assert main(["pacs", "echo", "orthanc"]) == 0
    code = main(["make-studies", "--count", "4", "--prompts", str(prompts), "--out", str(out), "--steps", "2",
                 "--model", str(tiny_pack_dir), "--dicomdir", "--seed", "3"])  # fmt: skip
    assert code == 0
    files = sorted(p for p in out.rglob("IM*.dcm") if "fileset" not in p.parts)
    assert len(files) == 4
    datasets = [_assert_valid(f) for f in files]
    assert len({ds.PatientID for ds in datasets}) == 4 and len({ds.StudyInstanceUID for ds in datasets}) == 4
    assert len({ds.AccessionNumber for ds in datasets}) == 4
    assert all(str(ds.PatientName).startswith("SYNTHETIC^") for ds in datasets)
    assert {ds.PatientSex for ds in datasets} <= {"F", "M"}
    assert (out / "fileset" / "DICOMDIR").is_file()
    assert len(pydicom.dcmread(out / "fileset" / "DICOMDIR").DirectoryRecordSequence) >= 4 * 4  # patient..image
    before = {uid for uid, _ in server.instances()}

    assert main(["send", str(files[0]), str(files[1]), "--node", "orthanc"]) == 0
    assert main(["send", str(files[2]), str(files[3]), "--node", "orthanc", "--stow"]) == 0
    arrived = {uid for uid, _ in server.instances()} - before
    assert arrived == {str(ds.SOPInstanceUID) for ds in datasets}
    assert main(["outbox"]) == 0
    assert "0 file(s) waiting" in capsys.readouterr().out


def test_send_to_a_down_pacs_keeps_files_in_the_outbox(tiny_pack_dir: Path, tmp_path: Path, capsys) -> None:
    from tests.pacs_servers import free_port

    dcm = tmp_path / "one.dcm"
    assert (
        main(["generate", "Normal", "--model", str(tiny_pack_dir), "--steps", "1", "--quiet", "--out", str(dcm)]) == 0
    )
    port = free_port()  # nothing listens there
    assert main(["pacs", "add", "down", "--host", "127.0.0.1", "--port", str(port), "--aet", "NOBODY",
                 "--timeout", "1"]) == 0  # fmt: skip
    assert main(["send", str(dcm), "--node", "down", "--retries", "0"]) == 1
    out = capsys.readouterr().out
    assert "connection refused" in out and "1 file(s) kept in the outbox" in out
    assert main(["outbox"]) == 0
    assert "1 file(s) waiting" in capsys.readouterr().out
