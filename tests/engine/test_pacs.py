"""engine.dicom.pacs against real peers on 127.0.0.1: Orthanc (C-STORE, STOW-RS), dcmtk storescp, and faults."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from engine.dicom import dimse, pacs, stow
from engine.dicom.outbox import Outbox, OutboxError
from engine.dicom.pacs import PacsNode, SendEvent, TlsSettings
from tests.pacs_servers import (
    LOOPBACK,
    OrthancServer,
    StoreScp,
    black_hole,
    free_port,
    orthanc,
    orthanc_server,  # noqa: F401 (fixture)
    storescp,
    storescp_server,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.slow
TINY_BACKOFF_S = 0.01
SILENT = -1  # scripted_scp: answer too late


# ---------------------------------------------------------------------------------------------------------
# Helpers


def make_sc(index: int, *, seed: int = 0) -> Dataset:
    """A small valid Secondary Capture: 64x64 uint16 MONOCHROME2, fresh UIDs, the Type 2 attributes."""
    rng = np.random.default_rng(seed * 1000 + index)
    pixels = rng.integers(0, 4096, size=(64, 64), dtype=np.uint16)
    sop_instance_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    # Patient, General Study, General Series (Type 2 attributes present, some empty)
    ds.PatientName = "Synthetic^Test"
    ds.PatientID = f"CXR-TEST-{seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.Laterality = ""
    # SC Equipment, General Image, Image Pixel, SC Image
    ds.ConversionType = "SYN"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = index + 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def write_files(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"image_{index:02d}.dcm"
        make_sc(index, seed=seed).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def fill_outbox(folder: Path, count: int, *, seed: int = 0, node: str = "TEST") -> tuple[Outbox, dict[str, np.ndarray]]:
    """An outbox holding ``count`` fresh datasets queued for ``node``; returns it and the pixels by SOP
    Instance UID."""
    outbox = Outbox(folder)
    expected = {}
    for index in range(count):
        ds = make_sc(index, seed=seed)
        outbox.put(ds, node)
        expected[str(ds.SOPInstanceUID)] = ds.pixel_array.copy()
    return outbox, expected


def orthanc_node(server: OrthancServer, **overrides: object) -> PacsNode:
    node = PacsNode(
        name="TEST",
        host=LOOPBACK,
        port=server.dicom_port,
        called_ae_title=server.aet,
        calling_ae_title="CXRSTUDIO",
        connection_timeout_s=5,
        acse_timeout_s=5,
        dimse_timeout_s=10,
        network_timeout_s=10,
        dicomweb_url=server.dicomweb_url,
        dicomweb_user=server.user,
        dicomweb_password=server.password,
    )
    return replace(node, **overrides)


def assert_arrived_once_with_same_pixels(server: OrthancServer, expected: dict[str, np.ndarray]) -> None:
    """Every expected instance is in Orthanc exactly once, with identical pixels (matched by SOP UID)."""
    rows = [(uid, orthanc_id) for uid, orthanc_id in server.instances() if uid in expected]
    uids = [uid for uid, _ in rows]
    missing = sorted(set(expected) - set(uids))
    twice = sorted({uid for uid in uids if uids.count(uid) > 1})
    assert not missing and not twice, f"Orthanc lacks {missing} and holds twice {twice}"
    for uid, orthanc_id in rows:
        stored = pydicom.dcmread(io.BytesIO(server.instance_file(orthanc_id)))
        assert stored.SOPInstanceUID == uid
        np.testing.assert_array_equal(stored.pixel_array, expected[uid])


@pytest.fixture
def refused_port() -> int:
    """A loopback port where nothing listens."""
    return free_port()


# ---------------------------------------------------------------------------------------------------------
# Nodes and statuses (no server)


def test_node_round_trips_through_json_and_rejects_unknown_keys() -> None:
    node = PacsNode(
        "Main PACS",
        "pacs.example.org",
        11112,
        "PACS",
        tls=TlsSettings(ca_file="/etc/ca.pem"),
        dicomweb_url="https://pacs.example.org/dicom-web",
        dicomweb_user="u",
        dicomweb_password="p",
    )
    assert PacsNode.from_dict(node.to_dict()) == node
    with pytest.raises(ValueError, match="unknown PACS node settings: colour"):
        PacsNode.from_dict({**node.to_dict(), "colour": "red"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"called_ae_title": "A" * 17}, "called AE title must be 1 to 16"),
        ({"calling_ae_title": "BAD\\AE"}, "without backslash"),
        ({"port": 0}, "port must be an integer"),
        ({"acse_timeout_s": 0}, "acse_timeout_s must be a number of seconds above 0"),
        ({"dicomweb_url": "ftp://x"}, "must start with http"),
    ],
)
def test_node_validates_its_settings(change: dict[str, object], message: str) -> None:
    values = {"name": "X", "host": LOOPBACK, "port": 104, "called_ae_title": "PACS"} | change
    with pytest.raises(ValueError, match=message):
        PacsNode(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "outcome", "words"),
    [
        (0x0000, "stored", "success"),
        (0xB000, "warning", "coercion of data elements"),
        (0xB007, "warning", "data set does not match SOP class"),
        (0xA701, "failed", "out of resources"),
        (0xA900, "failed", "data set does not match SOP class"),
        (0xC123, "failed", "cannot understand"),
        (0x0122, "failed", "SOP class not supported"),
    ],
)
def test_store_statuses_in_words(code: int, outcome: str, words: str) -> None:
    assert pacs.store_outcome(code) == outcome
    assert pacs.describe_status(code) == f"status 0x{code:04X}: {words}"


# ---------------------------------------------------------------------------------------------------------
# Happy paths


def test_echo_orthanc(orthanc_server: OrthancServer) -> None:  # noqa: F811
    result = dimse.echo(orthanc_node(orthanc_server))
    assert result.ok, result.message
    assert result.status == 0


def test_echo_storescp(storescp_server: StoreScp) -> None:  # noqa: F811
    node = PacsNode("SCP", LOOPBACK, storescp_server.port, storescp_server.aet, connection_timeout_s=5)
    result = dimse.echo(node)
    assert result.ok, result.message
    assert f"PACS 'SCP' at {LOOPBACK}:{storescp_server.port} answered C-ECHO" in result.message


def test_c_store_ten_files_to_orthanc(orthanc_server: OrthancServer, tmp_path: Path) -> None:  # noqa: F811
    paths = write_files(tmp_path, 10, seed=1)
    expected = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p).pixel_array for p in paths}
    events: list[SendEvent] = []

    report = dimse.send_files(orthanc_node(orthanc_server), paths, progress=events.append)

    assert report.ok, report.summary()
    assert (report.sent, report.attempts, len(report.warnings)) == (10, 1, 0), report.summary()
    assert [e.done for e in events if e.result is not None] == list(range(1, 11)), [e.message for e in events]
    print(f"C-STORE of 10 files: {report.elapsed_s:.3f} s")
    assert_arrived_once_with_same_pixels(orthanc_server, expected)


def test_stow_ten_files_from_the_outbox(orthanc_server: OrthancServer, tmp_path: Path) -> None:  # noqa: F811
    outbox, expected = fill_outbox(tmp_path / "outbox", 10, seed=2)

    report = outbox.send(orthanc_node(orthanc_server), method="stow", batch_size=4)

    assert report.ok, report.summary()
    assert (report.sent, report.attempts) == (10, 3)  # batches of 4, 4, 2
    assert outbox.pending() == []
    assert outbox.attempts() == {}
    print(f"STOW-RS of 10 files: {report.elapsed_s:.3f} s")
    assert_arrived_once_with_same_pixels(orthanc_server, expected)


def test_stow_with_a_wrong_password_says_so_and_keeps_the_files(
    orthanc_server: OrthancServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    outbox, _ = fill_outbox(tmp_path / "outbox", 3, seed=3)
    node = orthanc_node(orthanc_server, dicomweb_password="wrong")

    report = outbox.send(node, method="stow", retries=3, backoff_s=TINY_BACKOFF_S)

    assert report.error == (
        f"DICOMweb server {orthanc_server.dicomweb_url}/studies refused the user name or password "
        "(HTTP 401 Unauthorized)"
    )
    assert report.attempts == 1, "a refused password must not be retried"
    assert len(outbox.pending()) == 3
    assert {a.last_error for a in outbox.attempts().values()} == {report.error}


# ---------------------------------------------------------------------------------------------------------
# Faults


def test_rejected_association_is_permanent_and_keeps_the_outbox(
    orthanc_server: OrthancServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    outbox, _ = fill_outbox(tmp_path / "outbox", 5, seed=4)
    node = orthanc_node(orthanc_server, called_ae_title="WRONGAET")

    report = outbox.send(node, retries=3, backoff_s=TINY_BACKOFF_S)

    assert report.error == (
        f"PACS 'TEST' at {LOOPBACK}:{orthanc_server.dicom_port} rejected the association: "
        "called AE title not recognised (permanent); check the called AE title 'WRONGAET'"
    )
    assert report.attempts == 1, "a permanent rejection must not be retried"
    assert (report.sent, len(report.remaining)) == (0, 5)
    assert len(outbox.pending()) == 5
    assert [(a.attempts, a.last_error) for a in outbox.attempts().values()] == [(1, report.error)] * 5
    assert not dimse.echo(node).ok


def test_orthanc_killed_mid_batch_then_resend_delivers_everything_once(tmp_path: Path) -> None:
    outbox, expected = fill_outbox(tmp_path / "outbox", 10, seed=5)
    with orthanc(tmp_path / "orthanc") as server:
        node = orthanc_node(server)

        def kill_after_four(event: SendEvent) -> None:
            if event.result is not None and event.done == 4:
                server.kill()

        first = outbox.send(node, retries=2, backoff_s=TINY_BACKOFF_S, progress=kill_after_four)

        assert first.sent == 4
        label, fifth = f"PACS 'TEST' at {LOOPBACK}:{server.dicom_port}", outbox.pending()[0].name
        # The drop shows either while the fifth file goes out or just before, as the kernel reports it.
        assert re.fullmatch(
            re.escape(f"cannot reach {label}: connection refused: is the PACS running? (gave up after 3 attempts; ")
            + re.escape(f"first: {label} closed the connection ")
            + f"(during C-STORE of {re.escape(fifth)}|before {re.escape(fifth)} was sent)\\)",
            first.error or "",
        ), first.error
        assert len(outbox.pending()) == 6, "every unsent file stays in the outbox"

        server.start()  # same storage, same ports
        second = outbox.send(node, retries=2, backoff_s=TINY_BACKOFF_S)

        assert second.ok, second.summary()
        assert second.sent == 6, "only the files left over are sent again"
        assert outbox.pending() == []
        assert_arrived_once_with_same_pixels(server, expected)


def test_storescp_killed_mid_batch_then_resend_stores_each_file_once(tmp_path: Path) -> None:
    outbox, expected = fill_outbox(tmp_path / "outbox", 10, seed=6, node="SCP")
    with storescp(tmp_path / "received", unique_filenames=True) as server:
        node = PacsNode("SCP", LOOPBACK, server.port, server.aet, connection_timeout_s=5, acse_timeout_s=5)

        def kill_after_three(event: SendEvent) -> None:
            if event.result is not None and event.done == 3:
                server.kill()

        first = outbox.send(node, retries=1, backoff_s=TINY_BACKOFF_S, progress=kill_after_three)
        assert (first.sent, len(outbox.pending())) == (3, 7)
        assert "connection refused: is the PACS running?" in (first.error or "")

        server.start()
        second = outbox.send(node, retries=1, backoff_s=TINY_BACKOFF_S)
        assert second.ok and second.sent == 7, second.summary()

        received = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in server.files()]
        assert sorted(received) == sorted(expected), "storescp got a file twice or missed one"


def test_a_peer_that_never_answers_times_out_and_keeps_the_files(tmp_path: Path) -> None:
    outbox, _ = fill_outbox(tmp_path / "outbox", 3, seed=7, node="HOLE")
    with black_hole() as port:
        node = PacsNode("HOLE", LOOPBACK, port, "ANYSCP", connection_timeout_s=1, acse_timeout_s=1)
        started = time.monotonic()
        result = dimse.echo(node)
        assert time.monotonic() - started < 2.5
        assert result.message == f"PACS 'HOLE' at {LOOPBACK}:{port}: no answer within 1 s to the association request"

        started = time.monotonic()
        report = outbox.send(node, retries=1, backoff_s=TINY_BACKOFF_S)
        assert time.monotonic() - started < 2 * 1 + 2.5  # two attempts of 1 s each, and some slack
        assert report.error == f"{result.message} (gave up after 2 attempts)"
        assert len(outbox.pending()) == 3

        web_node = replace(node, dicomweb_url=f"http://{LOOPBACK}:{port}/dicom-web", network_timeout_s=1)
        started = time.monotonic()
        web = stow.stow_rs(web_node, outbox.pending(), retries=0)
        assert time.monotonic() - started < 2.5
        assert web.error == f"DICOMweb server http://{LOOPBACK}:{port}/dicom-web/studies: no answer within 1 s"
        assert len(web.remaining) == 3


def test_connection_refused_is_retried_with_back_off(refused_port: int, tmp_path: Path) -> None:
    outbox, _ = fill_outbox(tmp_path / "outbox", 2, seed=8, node="DOWN")
    node = PacsNode("DOWN", LOOPBACK, refused_port, "PACS", connection_timeout_s=2)
    notes: list[str] = []

    started = time.monotonic()
    report = outbox.send(node, retries=3, backoff_s=0.05, progress=lambda e: notes.append(e.message))
    elapsed = time.monotonic() - started

    assert report.error == (
        f"cannot reach PACS 'DOWN' at {LOOPBACK}:{refused_port}: connection refused: is the PACS running? "
        "(gave up after 4 attempts)"
    )
    assert report.attempts == 4
    assert elapsed >= 0.05 + 0.1 + 0.2, "the back-off doubles: 0.05, 0.1, 0.2 s"
    assert [n.rsplit("trying again in ", 1)[1] for n in notes] == [
        "0.05 s (attempt 2 of 4)",
        "0.1 s (attempt 3 of 4)",
        "0.2 s (attempt 4 of 4)",
    ]
    assert len(outbox.pending()) == 2

    web = stow.stow_rs(
        replace(node, dicomweb_url=f"http://{LOOPBACK}:{refused_port}/dicom-web"),
        outbox.pending(),
        retries=1,
        backoff_s=TINY_BACKOFF_S,
    )
    assert web.error == (
        f"cannot reach DICOMweb server http://{LOOPBACK}:{refused_port}/dicom-web/studies: connection refused: "
        "is the PACS running? (gave up after 2 attempts)"
    )


# ---------------------------------------------------------------------------------------------------------
# Statuses from a scripted peer (pynetdicom SCP in this process), cancel


@pytest.fixture
def scripted_scp() -> Iterator[tuple[int, dict[str, int]]]:
    """A storage SCP answering each SOP Instance UID with the status in the yielded dict (default success)."""
    statuses: dict[str, int] = {}

    def on_store(event: evt.Event) -> int:
        status = statuses.get(str(event.request.AffectedSOPInstanceUID), 0x0000)
        if status == SILENT:
            time.sleep(1.0)  # longer than the sender's DIMSE timeout; it aborts meanwhile
            return 0x0000
        return status

    ae = AE("SCRIPTED")
    ae.add_supported_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_supported_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()


def test_warning_counts_as_stored_and_failure_stays_in_the_outbox(
    scripted_scp: tuple[int, dict[str, int]], tmp_path: Path
) -> None:
    port, statuses = scripted_scp
    outbox = Outbox(tmp_path / "outbox")
    datasets = [make_sc(i, seed=9) for i in range(3)]
    queued = [outbox.put(ds, "SCRIPTED") for ds in datasets]
    statuses[str(datasets[1].SOPInstanceUID)] = 0xB000
    statuses[str(datasets[2].SOPInstanceUID)] = 0xA700

    report = outbox.send(PacsNode("SCRIPTED", LOOPBACK, port, "SCRIPTED", connection_timeout_s=5))

    assert (report.sent, len(report.warnings), len(report.failed)) == (2, 1, 1)
    assert report.warnings[0].message == "status 0xB000: coercion of data elements"
    assert report.failed[0].message == "status 0xA700: out of resources"
    assert outbox.pending() == [queued[2]]
    assert outbox.attempts()[queued[2].name].last_error == "status 0xA700: out of resources"
    assert "2 of 3 sent (1 with a warning), 1 failed, 0 left" in report.summary()


def test_a_store_that_is_never_answered_times_out_and_keeps_the_file(
    scripted_scp: tuple[int, dict[str, int]], tmp_path: Path
) -> None:
    port, statuses = scripted_scp
    outbox = Outbox(tmp_path / "outbox")
    slow = make_sc(0, seed=13)
    queued = outbox.put(slow, "SCRIPTED")
    statuses[str(slow.SOPInstanceUID)] = SILENT
    node = PacsNode("SCRIPTED", LOOPBACK, port, "SCRIPTED", connection_timeout_s=5, dimse_timeout_s=0.5)

    started = time.monotonic()
    report = outbox.send(node, retries=0)

    assert time.monotonic() - started < 0.5 + 1.5
    assert report.error == f"PACS 'SCRIPTED' at {LOOPBACK}:{port}: no answer within 0.5 s to C-STORE of {queued.name}"
    assert outbox.pending() == [queued]


def test_cancel_stops_between_files_and_keeps_the_rest(
    scripted_scp: tuple[int, dict[str, int]], tmp_path: Path
) -> None:
    port, _ = scripted_scp
    outbox, _ = fill_outbox(tmp_path / "outbox", 5, seed=10, node="SCRIPTED")
    done: list[int] = []

    report = outbox.send(
        PacsNode("SCRIPTED", LOOPBACK, port, "SCRIPTED", connection_timeout_s=5),
        progress=lambda e: done.append(e.done),
        cancel=lambda: len(done) >= 2,
    )

    assert report.cancelled and report.sent == 2
    assert len(outbox.pending()) == 3
    assert {a.last_error for a in outbox.attempts().values()} == {"cancelled"}


# ---------------------------------------------------------------------------------------------------------
# TLS (storescp +tls with a throw-away self-signed certificate)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost", "-days", "2"),
            *("-addext", f"subjectAltName=IP:{LOOPBACK}"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key, cert


def test_echo_over_tls(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    key, cert = tls_files
    with storescp(tmp_path / "received", tls_key=key, tls_cert=cert) as server:
        node = PacsNode("TLS", LOOPBACK, server.port, server.aet, tls=TlsSettings(ca_file=str(cert)))
        result = dimse.echo(node)
        assert result.ok, result.message

        untrusted = dimse.echo(replace(node, tls=TlsSettings()))
        assert not untrusted.ok
        assert untrusted.message.startswith(f"cannot reach PACS 'TLS' at {LOOPBACK}:{server.port}: TLS certificate")


# ---------------------------------------------------------------------------------------------------------
# Outbox files


def test_put_writes_a_complete_file_and_replaces_an_older_copy(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    ds = make_sc(0, seed=11)
    first = outbox.put(ds, "TEST")
    again = outbox.put(ds, "TEST")
    assert outbox.pending() == [again] and not first.exists()
    assert pydicom.dcmread(again).SOPInstanceUID == ds.SOPInstanceUID

    source = write_files(tmp_path / "src", 1, seed=11)[0]
    copied = outbox.put(source, "TEST")
    assert copied.read_bytes() == source.read_bytes() and source.exists()
    files = sorted(outbox.queue_folder.iterdir())
    assert files == outbox.pending(), "no temporary files left"
    assert {outbox.node_of(p) for p in files} == {"TEST"}

    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(ValueError, match="not a readable DICOM Part 10 file"):
        outbox.put(tmp_path / "notes.txt", "TEST")


def test_put_on_a_full_disk_raises_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = Outbox(tmp_path / "outbox")
    real_write = os.write
    calls = []

    def write_then_fill_up(fd: int, data: bytes) -> int:
        if len(data) < 1000:
            return real_write(fd, data)  # small writes (none here since the index holds the node) pass
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:1000]))  # part of the file lands on disk first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write_then_fill_up)  # engine.fileio writes with os.write
    with pytest.raises(OutboxError, match=r"the disk is full: could not write .* nothing was written"):
        outbox.put(make_sc(0, seed=12), "TEST")
    monkeypatch.undo()

    assert len(calls) == 2
    assert list(outbox.queue_folder.iterdir()) == [], "no partial or temporary file is left"
    assert outbox.pending() == [] and Outbox(tmp_path / "outbox").pending() == []
