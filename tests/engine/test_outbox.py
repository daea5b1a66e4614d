"""The outbox: one queue per destination, bad files failed by name, timeouts that bound the whole exchange.

Real peers on 127.0.0.1 (dcmtk storescp, a black hole that accepts and never answers) and the real CLI.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from engine.cli.main import main
from engine.dicom.outbox import Outbox
from engine.dicom.pacs import PacsNode
from tests.engine.test_pacs import make_sc, write_files
from tests.pacs_servers import LOOPBACK, StoreScp, black_hole, free_port, storescp_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_STUDIO_NODES", str(tmp_path / "config" / "pacs_nodes.json"))
    monkeypatch.setattr("engine.paths.user_data_dir", lambda: tmp_path / "userdata")


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _received(server: StoreScp) -> set[str]:
    return {_uid(p) for p in server.files()}


def _add_nodes(server: StoreScp) -> None:
    """Node A: nothing listens (down). Node B: the shared storescp."""
    assert main(["pacs", "add", "A", "--host", LOOPBACK, "--port", str(free_port()), "--aet", "NODEA",
                 "--timeout", "2"]) == 0  # fmt: skip
    assert main(["pacs", "add", "B", "--host", LOOPBACK, "--port", str(server.port), "--aet", server.aet,
                 "--timeout", "5"]) == 0  # fmt: skip


def _truncate_pixels(path: Path, keep_fraction: float = 0.5) -> None:
    """Cut the file inside its pixel data, as a killed copy or a full disk would."""
    data = path.read_bytes()
    pixel_bytes = len(pydicom.dcmread(path).PixelData)
    path.write_bytes(data[: len(data) - int(pixel_bytes * (1 - keep_fraction))])


# ---------------------------------------------------------------------------------------------------------
# Item 2: each queued file belongs to its node


def test_files_queued_for_a_down_node_are_not_sent_to_another(
    storescp_server: StoreScp,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _add_nodes(storescp_server)
    x, y, z = write_files(tmp_path / "src", 3, seed=21)
    capsys.readouterr()

    assert main(["send", str(x), str(y), "--node", "A", "--retries", "0"]) == 1
    assert "2 file(s) kept in the outbox" in capsys.readouterr().out
    assert main(["send", str(z), "--node", "B"]) == 0

    received = _received(storescp_server)
    assert _uid(z) in received
    assert _uid(x) not in received and _uid(y) not in received, "B received files queued for A"
    outbox = Outbox()
    assert sorted(_uid(p) for p in outbox.pending()) == sorted([_uid(x), _uid(y)])
    assert {outbox.node_of(p) for p in outbox.pending()} == {"A"}
    assert outbox.pending("A") == outbox.pending() and outbox.pending("B") == []

    capsys.readouterr()
    assert main(["outbox"]) == 0
    listing = capsys.readouterr().out
    lines = [line for line in listing.splitlines() if ".dcm" in line]
    assert len(lines) == 2
    assert all("node A" in line and "connection refused" in line for line in lines), listing


def test_the_same_image_queued_for_two_nodes_stays_queued_for_each(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    ds = make_sc(0, seed=22)
    for_a = outbox.put(ds, node="A")
    for_b = outbox.put(ds, node="B")
    again_for_a = outbox.put(ds, node="A")
    assert not for_a.exists(), "a newer copy for the same node replaces the older one"
    assert outbox.pending("A") == [again_for_a] and outbox.pending("B") == [for_b]


def test_old_entries_without_a_node_are_shown_and_sent_only_when_asked(
    storescp_server: StoreScp,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _add_nodes(storescp_server)
    folder = tmp_path / "userdata" / "outbox"
    folder.mkdir(parents=True)
    old = make_sc(0, seed=23)
    old_path = folder / f"{time.time_ns():020d}_{old.SOPInstanceUID}.dcm"  # as earlier versions named it
    old.save_as(old_path, enforce_file_format=True)
    (z,) = write_files(tmp_path / "src", 1, seed=24)

    assert main(["send", str(z), "--node", "B"]) == 0
    assert str(old.SOPInstanceUID) not in _received(storescp_server), "an entry without a node was sent"
    assert old_path.exists()
    capsys.readouterr()

    assert main(["outbox"]) == 0
    listing = capsys.readouterr().out
    assert f"{old_path.name}  (no node)" in listing
    assert "cxr-studio send --node NAME --include-unassigned" in listing

    assert main(["send", "--node", "B", "--include-unassigned"]) == 0
    assert str(old.SOPInstanceUID) in _received(storescp_server)
    assert Outbox().pending() == []


# ---------------------------------------------------------------------------------------------------------
# Item 3: one bad file must not block a queue


def test_send_folder_skips_hidden_and_temporary_files_and_fails_bad_ones_by_name(
    storescp_server: StoreScp,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _add_nodes(storescp_server)
    folder = tmp_path / "folder"
    good = write_files(folder, 3, seed=25)
    hidden = folder / ".hidden.dcm"
    make_sc(10, seed=25).save_as(hidden, enforce_file_format=True)
    leftover = folder / ".image_09.dcm.k2j4h1.tmp"  # what a killed atomic write leaves
    make_sc(11, seed=25).save_as(leftover, enforce_file_format=True)
    plain_tmp = folder / "partial.tmp"
    make_sc(12, seed=25).save_as(plain_tmp, enforce_file_format=True)
    in_hidden_folder = folder / ".trash" / "old.dcm"
    in_hidden_folder.parent.mkdir()
    make_sc(14, seed=25).save_as(in_hidden_folder, enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    truncated = folder / "sub" / "truncated.dcm"
    truncated.parent.mkdir()
    make_sc(13, seed=25).save_as(truncated, enforce_file_format=True)
    _truncate_pixels(truncated)
    skipped = {_uid(p) for p in (hidden, leftover, plain_tmp, in_hidden_folder)}
    capsys.readouterr()

    assert main(["send", str(folder), "--node", "B"]) == 1
    captured = capsys.readouterr()

    received = _received(storescp_server)
    assert {_uid(p) for p in good} <= received
    assert not skipped & received, "a hidden or temporary file was sent"
    assert "notes.txt: not a readable DICOM Part 10 file" in captured.err
    assert "truncated.dcm: the pixel data holds 4096 bytes, 64x64x1 at 16 bits needs 8192" in captured.err
    assert Outbox().pending() == [], "bad files are never queued; good ones are all sent"
    assert "3 of 3 sent" in captured.out
    assert "skipped 4 hidden or temporary (*.tmp) file(s)" in captured.err


def test_a_corrupt_file_in_the_outbox_is_moved_aside_and_the_rest_are_sent(
    storescp_server: StoreScp,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = PacsNode("B", LOOPBACK, storescp_server.port, storescp_server.aet, connection_timeout_s=5)
    outbox = Outbox(tmp_path / "outbox")
    datasets = [make_sc(i, seed=26) for i in range(3)]
    queued = [outbox.put(ds, node="B") for ds in datasets]
    _truncate_pixels(queued[0])  # damaged while it waited (a bad disk, another program)

    report = outbox.send(node, retries=0)

    assert report.sent == 2 and [r.path.name for r in report.failed] == [queued[0].name]
    assert "the pixel data holds" in report.failed[0].message
    assert outbox.pending() == [], "the corrupt file is not retried"
    assert [p.name for p in outbox.failed()] == [queued[0].name]
    received = _received(storescp_server)
    assert {str(ds.SOPInstanceUID) for ds in datasets[1:]} <= received
    assert str(datasets[0].SOPInstanceUID) not in received
    assert outbox.send(node, retries=0).total == 0

    assert main(["outbox", "--outbox", str(outbox.folder)]) == 0
    listing = capsys.readouterr().out
    assert f"failed/{queued[0].name}  (failed for good, not sent: {report.failed[0].message})" in listing
    assert "0 file(s) waiting" in listing


# ---------------------------------------------------------------------------------------------------------
# Item 11: the resend hint and --timeout


def test_resend_hint_names_a_non_default_outbox(
    storescp_server: StoreScp,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _add_nodes(storescp_server)
    (x,) = write_files(tmp_path / "src", 1, seed=27)
    custom = tmp_path / "my outbox"
    capsys.readouterr()

    assert main(["send", str(x), "--node", "A", "--retries", "0", "--outbox", str(custom)]) == 1
    out = capsys.readouterr().out
    assert f"resend with `cxr-studio send --node A --outbox '{custom}'`" in out, out


def test_timeout_bounds_the_whole_exchange_with_a_peer_that_stalls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (x,) = write_files(tmp_path / "src", 1, seed=28)
    margin_s = 3.0
    with black_hole() as port:
        assert main(["pacs", "add", "hole", "--host", LOOPBACK, "--port", str(port), "--aet", "HOLE",
                     "--timeout", "1", "--dicomweb-url", f"http://{LOOPBACK}:{port}/dicom-web"]) == 0  # fmt: skip
        capsys.readouterr()

        started = time.monotonic()
        assert main(["pacs", "echo", "hole"]) == 1
        assert time.monotonic() - started < 1 + margin_s
        assert "no answer within 1 s to the association request" in capsys.readouterr().out

        for extra in ([], ["--stow"]):
            started = time.monotonic()
            assert main(["send", str(x), "--node", "hole", "--retries", "0", *extra]) == 1
            assert time.monotonic() - started < 1 + margin_s, extra
            assert "no answer within 1 s" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "userdata", ignore_errors=True)


def test_a_negative_retry_count_is_refused_before_anything_is_queued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pacs", "add", "A", "--host", LOOPBACK, "--port", str(free_port()), "--aet", "NODEA"]) == 0
    (x,) = write_files(tmp_path / "src", 1, seed=29)
    capsys.readouterr()
    assert main(["send", str(x), "--node", "A", "--retries", "-1"]) == 2
    assert capsys.readouterr().err == "cxr-studio send: error: --retries must be 0 or more, got -1\n"
    assert Outbox().pending() == [], "nothing is queued by a refused command"


def test_timeout_bounds_a_store_that_an_accepting_peer_never_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The association is accepted at once; the C-STORE answer never comes (until the test ends)."""
    release = threading.Event()

    def on_store(event: evt.Event) -> int:
        release.wait(30)
        return 0x0000

    ae = AE("STALLING")
    ae.add_supported_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_supported_context(Verification)
    server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        port = server.server_address[1]
        assert main(["pacs", "add", "slow", "--host", LOOPBACK, "--port", str(port), "--aet", "STALLING",
                     "--timeout", "1"]) == 0  # fmt: skip
        assert main(["pacs", "echo", "slow"]) == 0
        (x,) = write_files(tmp_path / "src", 1, seed=30)
        capsys.readouterr()

        started = time.monotonic()
        assert main(["send", str(x), "--node", "slow", "--retries", "0"]) == 1
        assert time.monotonic() - started < 1 + 3.0
        assert "no answer within 1 s to C-STORE of" in capsys.readouterr().out
    finally:
        release.set()
        server.shutdown()
