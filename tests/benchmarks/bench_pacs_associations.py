"""C-STORE over 1, 2, 4 and 8 parallel associations to a real Orthanc on loopback, and a durability run.

    .venv/bin/python tests/benchmarks/bench_pacs_associations.py [--count 400] [--associations 1,2,4,8]
        [--durability 2000] [--durability-associations 8] [--kill-at 0.3] [--size 128]

Rates: for each association count, ``--count`` fresh instances go through an outbox (filling it is not
timed) to Orthanc; prints instances/s, the ratio to one association and this process's CPU time, after
checking through Orthanc's REST API that it holds every instance once (by SOP Instance UID) and the outbox
is empty. Twice: as ``dimse`` sends (TCP_NODELAY and quick ACKs, so an answer comes back in ~5 ms on
loopback: bound by CPU, ours and Orthanc's), and "latency-bound", with the quick ACKs off, so each answer
waits for a delayed ACK (~40 ms) as with a plain client or a real network's round trip: there parallel
associations pay off the way the published figures (one storescu ~13 images/s, 8 at once ~110/s) show.

Durability (``--durability N``; 10000 for the full run, 0 to skip): N instances are queued and sent over
``--durability-associations``; Orthanc is killed (SIGKILL) once a ``--kill-at`` fraction has been
acknowledged, while the other associations have files in flight; the send stops with the rest kept in the
outbox; Orthanc is restarted on the same storage and the outbox resent until it is empty. Prints what each
send acknowledged and what Orthanc holds: every instance once, none missing, and no instance acknowledged
twice across the sends. (Orthanc itself keeps one copy per SOP Instance UID whatever arrives twice, so the
acknowledgement count is the check that nothing went twice; a resent file that arrived before the kill
but was never acknowledged is the one case DICOM allows to arrive again.)

The instances are one generated Secondary Capture image (``--size`` px) written again with fresh SOP
Instance UIDs (a new study every 100 instances), so making thousands takes seconds, not a model run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.dicom import dimse
from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset, write_dicom
from engine.dicom.outbox import Outbox
from engine.dicom.pacs import PacsNode, SendEvent, SendReport
from tests.pacs_servers import OrthancServer, orthanc

NODE = "bench"
INSTANCES_PER_STUDY = 100


def template(size: int, folder: Path) -> Dataset:
    """One generated Secondary Capture file (a smooth gradient with seeded noise, ``size`` x ``size``), read back."""
    rng = np.random.default_rng(0)
    smooth = np.linspace(0.2, 0.8, size, dtype=np.float32)[None, :] * np.ones((size, 1), np.float32)
    image = np.clip(smooth + rng.normal(0, 0.05, (size, size)).astype(np.float32), 0, 1)
    ds = build_dataset(image, SyntheticImageInfo(prompt="Normal chest radiograph", seed=0), StudyContext.synthetic(0))
    return pydicom.dcmread(write_dicom(ds, folder / "template.dcm"))


def fill(outbox: Outbox, ds: Dataset, count: int) -> set[str]:
    """Queue ``count`` copies of ``ds`` with fresh SOP Instance UIDs (fresh study and series per 100), in one
    ``Outbox.batch()`` as ``send`` and ``make-studies --send`` queue."""
    uids = set()
    with outbox.batch():
        for index in range(count):
            if index % INSTANCES_PER_STUDY == 0:
                ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            uid = generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            ds.InstanceNumber = index % INSTANCES_PER_STUDY + 1
            outbox.put(ds, NODE)
            uids.add(uid)
    return uids


def held(server: OrthancServer, uids: set[str]) -> Counter[str]:
    """How many times Orthanc holds each of ``uids`` (counted by SOP Instance UID over its REST API)."""
    return Counter(uid for uid, _ in server.instances() if uid in uids)


def check_held(server: OrthancServer, uids: set[str]) -> str:
    counts = held(server, uids)
    missing = len(uids - set(counts))
    twice = sum(1 for n in counts.values() if n > 1)
    verdict = "OK" if not missing and not twice else "FAILED"
    return f"Orthanc holds {len(counts)} of {len(uids)} (missing {missing}, more than once {twice}): {verdict}"


def node_for(server: OrthancServer) -> PacsNode:
    return PacsNode(
        name=NODE, host="127.0.0.1", port=server.dicom_port, called_ae_title=server.aet,
        connection_timeout_s=5, acse_timeout_s=10, dimse_timeout_s=10, network_timeout_s=10,
    )  # fmt: skip


@contextlib.contextmanager
def quick_acks(enabled: bool) -> Iterator[None]:
    """dimse's quick-ACK socket handlers on (as it sends) or off (each answer waits for a delayed ACK)."""
    handlers = dimse._QUICKACK_HANDLERS
    dimse._QUICKACK_HANDLERS = handlers if enabled else []
    try:
        yield
    finally:
        dimse._QUICKACK_HANDLERS = handlers


def rates(server: OrthancServer, work: Path, ds: Dataset, count: int, counts: list[int], mode: str) -> bool:
    node = node_for(server)
    per_second: dict[int, float] = {}
    ok = True
    print(f"rates, {mode}: {count} instances of {len(ds.PixelData) / 1e3:.0f} kB pixel data per run to Orthanc")
    for associations in counts:
        outbox = Outbox(work / f"outbox-{mode}-{associations}")
        uids = fill(outbox, ds, count)
        start, cpu = time.perf_counter(), time.process_time()
        report = outbox.send(node, associations=associations)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        per_second[associations] = count / elapsed
        ratio = per_second[associations] / per_second[counts[0]]
        verdict = check_held(server, uids)
        ok = ok and report.ok and verdict.endswith("OK")
        print(
            f"  {associations} association(s): {report.sent} sent in {elapsed:.2f} s = {per_second[associations]:.0f} "
            f"instances/s, x{ratio:.2f} vs {counts[0]}; client CPU {cpu:.2f} s; {len(outbox.pending())} left; {verdict}"
        )
    return ok


def durability(server: OrthancServer, work: Path, ds: Dataset, count: int, associations: int, kill_at: float) -> bool:
    outbox = Outbox(work / "outbox-durability")
    started = time.perf_counter()
    uids = fill(outbox, ds, count)
    queued_s = time.perf_counter() - started
    print(f"durability: {count} instances queued in {queued_s:.1f} s ({queued_s / count * 1000:.2f} s per 1,000); "
          f"{associations} associations; Orthanc killed after {kill_at:.0%} acknowledged")  # fmt: skip
    node = node_for(server)
    kill_after = max(1, int(count * kill_at))
    killed = threading.Event()

    def kill_mid_run(event: SendEvent) -> None:
        if event.result is not None and event.done == kill_after and not killed.is_set():
            killed.set()
            server.kill()  # SIGKILL while the other associations have files in flight

    acknowledged: list[str] = []
    reports: list[SendReport] = []
    start = time.perf_counter()
    report = outbox.send(node, associations=associations, retries=1, backoff_s=0.2, progress=kill_mid_run)
    reports.append(report)
    print(f"  send 1: {report.summary()}")
    print(f"  outbox after the kill: {len(outbox.pending())} waiting, {len(report.remaining)} never answered")
    server.start()  # same storage, same ports
    for attempt in range(2, 6):
        if not outbox.pending():
            break
        report = outbox.send(node, associations=associations, retries=3, backoff_s=0.5)
        reports.append(report)
        print(f"  send {attempt} (resend): {report.summary()}")
    elapsed = time.perf_counter() - start
    for each in reports:
        acknowledged += [result.sop_instance_uid for result in each.stored]
    twice = sum(1 for n in Counter(acknowledged).values() if n > 1)
    lost = len(uids - set(acknowledged))
    print(f"  acknowledged over all sends: {len(acknowledged)} for {count} instances (twice: {twice}, "
          f"never: {lost}); outbox left: {len(outbox.pending())}; {elapsed:.1f} s in all")  # fmt: skip
    verdict = check_held(server, uids)
    print(f"  {verdict}")
    return verdict.endswith("OK") and not twice and not lost and not outbox.pending()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="instances per rate run")
    parser.add_argument("--associations", default="1,2,4,8", help="association counts to time, comma-separated")
    parser.add_argument("--durability", type=int, default=2000, help="instances in the kill-and-resend run (0: skip)")
    parser.add_argument("--durability-associations", type=int, default=8)
    parser.add_argument("--kill-at", type=float, default=0.3, help="kill Orthanc after this fraction is acknowledged")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    args = parser.parse_args()
    counts = [int(text) for text in args.associations.split(",")]

    work = Path(tempfile.mkdtemp(prefix="cxr-pacs-assoc-bench-"))
    ds = template(args.size, work)
    ok = True
    # Orthanc serves 4 associations at once by default; give it a thread for each we open.
    with orthanc(work / "orthanc", dicom_threads=max(8, *counts, args.durability_associations)) as server:
        if args.count > 0:
            for mode, enabled in (("as sent (quick ACKs)", True), ("latency-bound (delayed ACKs)", False)):
                with quick_acks(enabled):
                    ok = rates(server, work, ds, args.count, counts, mode) and ok
        if args.durability > 0:
            ok = durability(server, work, ds, args.durability, args.durability_associations, args.kill_at) and ok
    print(f"work folder: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
