"""Sending over several associations (C-STORE) or parallel requests (STOW-RS) at once (issue 20, item 4).

Real peers on 127.0.0.1: dcmtk storescp (``--fork``, one process per association, ``+uf`` so a file
received twice is kept twice) and Orthanc (killed mid-send and restarted on the same storage).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest

from engine.cli.main import main
from engine.dicom.outbox import Outbox
from engine.dicom.pacs import PacsNode, SendEvent
from tests.engine.test_pacs import (
    TINY_BACKOFF_S,
    assert_arrived_once_with_same_pixels,
    fill_outbox,
    orthanc_node,
    write_files,
)
from tests.pacs_servers import LOOPBACK, orthanc, storescp

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_STUDIO_NODES", str(tmp_path / "config" / "pacs_nodes.json"))
    monkeypatch.setattr("engine.paths.user_data_dir", lambda: tmp_path / "userdata")


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


class Events:
    """Every progress event of a send, and the thread each came from."""

    def __init__(self) -> None:
        self.events: list[SendEvent] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, event: SendEvent) -> None:
        with self.lock:
            self.events.append(event)
            if event.result is not None:
                self.threads.add(threading.current_thread().name)

    def results(self) -> list[SendEvent]:
        return [event for event in self.events if event.result is not None]


def test_forty_files_over_four_associations_arrive_once_and_empty_the_outbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_files(tmp_path / "src", 40, seed=41)
    with storescp(tmp_path / "received", unique_filenames=True, fork=True) as server:
        assert main(["pacs", "add", "SCP", "--host", LOOPBACK, "--port", str(server.port), "--aet", server.aet,
                     "--timeout", "10"]) == 0  # fmt: skip
        capsys.readouterr()
        assert main(["send", str(tmp_path / "src"), "--node", "SCP", "--associations", "4"]) == 0
        out = capsys.readouterr().out
        received = sorted(_uid(path) for path in server.files())
    assert "C-STORE to PACS 'SCP'" in out and "40 of 40 sent, 0 failed, 0 left" in out, out
    assert received == sorted(_uid(path) for path in files), "storescp got a file twice or missed one"
    assert Outbox().pending() == []


def test_four_associations_run_at_once_and_count_each_file_once(tmp_path: Path) -> None:
    outbox, expected = fill_outbox(tmp_path / "outbox", 40, seed=42, node="SCP")
    events = Events()
    with storescp(tmp_path / "received", unique_filenames=True, fork=True) as server:
        node = PacsNode("SCP", LOOPBACK, server.port, server.aet, connection_timeout_s=10, acse_timeout_s=10)
        report = outbox.send(node, associations=4, progress=events)
        received = sorted(_uid(path) for path in server.files())

    assert report.ok and report.sent == 40 and report.attempts == 4, report.summary()
    assert received == sorted(expected)
    assert outbox.pending() == []
    results = events.results()
    assert [event.done for event in results] == list(range(1, 41)), "progress counts each file once, in order"
    assert all(event.total == 40 for event in results)
    assert sorted(event.result.sop_instance_uid for event in results if event.result) == sorted(expected)
    assert len(events.threads) >= 2, f"the files went over one thread only: {events.threads}"


def test_orthanc_killed_mid_send_over_four_associations_keeps_the_unacknowledged_and_resend_completes(
    tmp_path: Path,
) -> None:
    outbox, expected = fill_outbox(tmp_path / "outbox", 40, seed=43)
    events = Events()
    with orthanc(tmp_path / "orthanc") as server:
        node = orthanc_node(server, connection_timeout_s=2, acse_timeout_s=2, dimse_timeout_s=5)

        def kill_after_twelve(event: SendEvent) -> None:
            events(event)
            if event.result is not None and event.done == 12:
                server.kill()  # while the other associations have their files in flight

        first = outbox.send(node, associations=4, retries=1, backoff_s=TINY_BACKOFF_S, progress=kill_after_twelve)

        acknowledged = [result.sop_instance_uid for result in first.stored]
        assert 12 <= first.sent < 40 and not first.failed, first.summary()
        assert len(set(acknowledged)) == len(acknowledged), "a file was acknowledged twice"
        assert "connection refused: is the PACS running?" in (first.error or ""), first.error
        waiting = sorted(_uid(path) for path in outbox.pending())
        assert waiting == sorted(set(expected) - set(acknowledged)), "only what was acknowledged left the outbox"
        assert sorted(_uid(path) for path in first.remaining) == waiting
        assert [event.done for event in events.results()] == list(range(1, first.sent + 1))

        server.start()  # same storage, same ports
        second = outbox.send(node, associations=4, retries=1, backoff_s=TINY_BACKOFF_S)

        assert second.ok, second.summary()
        assert second.sent == len(waiting), "only the files left over are sent again"
        assert sorted(acknowledged + [r.sop_instance_uid for r in second.stored]) == sorted(expected)
        assert outbox.pending() == []
        assert_arrived_once_with_same_pixels(server, expected)


def test_stow_in_four_parallel_requests_stores_each_file_once(tmp_path: Path) -> None:
    outbox, expected = fill_outbox(tmp_path / "outbox", 40, seed=44)
    events = Events()
    with orthanc(tmp_path / "orthanc") as server:
        report = outbox.send(orthanc_node(server), "stow", batch_size=5, associations=4, progress=events)
        assert report.ok and report.sent == 40 and report.attempts == 8, report.summary()
        assert outbox.pending() == []
        assert [event.done for event in events.results()] == list(range(1, 41))
        assert len(events.threads) >= 2, f"the requests went from one thread only: {events.threads}"
        assert_arrived_once_with_same_pixels(server, expected)


@pytest.mark.parametrize("value", ["0", "33", "-1", "x", "2.5", ""])
def test_a_bad_association_count_is_refused_in_one_line_before_anything_is_queued(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pacs", "add", "A", "--host", LOOPBACK, "--port", "4242", "--aet", "NODEA"]) == 0
    (x,) = write_files(tmp_path / "src", 1, seed=45)
    capsys.readouterr()
    assert main(["send", str(x), "--node", "A", "--associations", value]) == 2
    assert capsys.readouterr().err == (
        f"cxr-studio send: error: --associations must be a whole number from 1 to 32, got {value!r}\n"
    )
    assert Outbox().pending() == [], "nothing is queued by a refused command"


def test_make_studies_refuses_a_bad_association_count_before_generating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Normal chest radiograph\n", encoding="utf-8")
    argv = ["make-studies", "--count", "1", "--prompts", str(prompts), "--out", str(tmp_path / "out")]
    assert main([*argv, "--send", "A", "--associations", "64"]) == 2
    assert capsys.readouterr().err == (
        "cxr-studio make-studies: error: --associations must be a whole number from 1 to 32, got '64'\n"
    )
    assert not (tmp_path / "out").exists()


def test_the_outbox_refuses_a_bad_association_count(tmp_path: Path) -> None:
    outbox, _ = fill_outbox(tmp_path / "outbox", 1, seed=46)
    node = PacsNode("TEST", LOOPBACK, 4242, "ANY")
    for value in (0, 33, True, 2.0):
        with pytest.raises(ValueError, match="associations must be a whole number from 1 to 32"):
            outbox.send(node, associations=value)  # type: ignore[arg-type]
    assert len(outbox.pending()) == 1


def test_an_association_the_pacs_never_answers_gives_up_and_the_other_sends_everything(tmp_path: Path) -> None:
    # storescp without --fork serves one association at a time: the second request waits unanswered
    outbox, expected = fill_outbox(tmp_path / "outbox", 300, seed=47, node="SCP")
    events = Events()
    with storescp(tmp_path / "received") as server:
        node = PacsNode(
            "SCP", LOOPBACK, server.port, server.aet, connection_timeout_s=5, acse_timeout_s=0.5, dimse_timeout_s=3
        )
        report = outbox.send(node, associations=2, retries=1, backoff_s=TINY_BACKOFF_S, progress=events)
        received = {_uid(path) for path in server.files()}

    notes = [event.message for event in events.events if event.message]
    assert any(note.endswith("; this connection stops, 1 other(s) carry on") for note in notes), notes
    assert report.ok and report.sent == 300 and report.error is None, report.summary()
    assert received == set(expected) and outbox.pending() == []


def test_make_studies_sends_over_parallel_associations(
    tiny_pack_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Normal chest radiograph\nSmall left pleural effusion\n", encoding="utf-8")
    out = tmp_path / "studies"
    with storescp(tmp_path / "received", unique_filenames=True, fork=True) as server:
        assert main(["pacs", "add", "SCP", "--host", LOOPBACK, "--port", str(server.port), "--aet", server.aet,
                     "--timeout", "10"]) == 0  # fmt: skip
        code = main(["make-studies", "--count", "4", "--images-per-study", "2", "--prompts", str(prompts),
                     "--out", str(out), "--steps", "1", "--model", str(tiny_pack_dir), "--provider", "cpu",
                     "--send", "SCP", "--associations", "3"])  # fmt: skip
        received = sorted(_uid(path) for path in server.files())
    assert code == 0, capsys.readouterr().err
    assert "8 of 8 sent, 0 failed, 0 left" in capsys.readouterr().out
    assert received == sorted(_uid(path) for path in out.rglob("*.dcm")), "a file arrived twice or not at all"
    assert Outbox().pending() == []
