"""DICOM networking over pynetdicom associations: C-ECHO (:func:`echo`) and C-STORE (:func:`send_files`).

An association is requested with every timeout of the node set; a refusal is read back as the PS3.8
A-ASSOCIATE-RJ reason in words, and a failed connect is tried once more with a plain socket to say why.
C-STORE sends over one association, or several at once (``associations``), each re-associating after a
drop (see ``pacs`` for the retry policy and how parallel workers share the files).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification

from engine.dicom.pacs import (
    CancelCallback,
    CheckedFile,
    EchoResult,
    FileResult,
    PacsNode,
    Problem,
    ProgressCallback,
    ResultCallback,
    RetryState,
    SendReport,
    SendRun,
    WorkQueue,
    check_associations,
    describe_status,
    readable_files,
    seconds_text,
    store_outcome,
)

LOGGER = logging.getLogger(__name__)
# pynetdicom logs every refused connection or abort at ERROR level; this module turns each into one
# plain-words message for the caller, so its own log would only repeat it on users' consoles.
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

MAX_PRESENTATION_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# PS3.8 Table 9-21: (result source, diagnostic) of an A-ASSOCIATE-RJ.
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def _application_entity(node: PacsNode) -> AE:
    ae = AE(ae_title=node.calling_ae_title)
    # pynetdicom's connection_timeout defaults to None (wait for ever): set every timeout.
    ae.connection_timeout = node.connection_timeout_s
    ae.acse_timeout = node.acse_timeout_s
    ae.dimse_timeout = node.dimse_timeout_s
    ae.network_timeout = node.network_timeout_s
    return ae


def _diagnose_connect(node: PacsNode, elapsed_s: float) -> Problem:
    """pynetdicom only logs why a connect failed: try once more with a plain socket to say why."""
    prefix = f"cannot reach {node.label}"
    no_answer = Problem(
        f"{prefix}: no answer within {seconds_text(node.connection_timeout_s)} (check host and port)", True
    )
    if elapsed_s >= 0.95 * node.connection_timeout_s:
        return no_answer
    try:
        with socket.create_connection((node.host, node.port), timeout=node.connection_timeout_s) as sock:
            if node.tls is not None:
                with node.tls.ssl_context().wrap_socket(sock, server_hostname=node.host):
                    pass
    except ConnectionRefusedError:
        return Problem(f"{prefix}: connection refused: is the PACS running?", True)
    except TimeoutError:
        return no_answer
    except socket.gaierror as exc:
        return Problem(f"{prefix}: unknown host name {node.host!r} ({exc.strerror})", False)
    except ssl.SSLCertVerificationError as exc:
        return Problem(f"{prefix}: TLS certificate not trusted: {exc.verify_message} (check the CA file)", False)
    except ssl.SSLError as exc:
        return Problem(f"{prefix}: TLS handshake failed: {exc.reason or exc} (check TLS settings)", False)
    except ValueError as exc:  # the TLS files could not be loaded
        return Problem(f"{prefix}: {exc}", False)
    except OSError as exc:
        return Problem(f"{prefix}: {exc.strerror or exc}", True)
    return Problem(f"{prefix}: the connection failed, but a second try got through: try again", True)


def _set_socket_option(event: evt.Event, option: int) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)


# dcmtk-based peers (storescp, Orthanc) write each answer's PDU header and body separately with Nagle on:
# the body then waits for our delayed ACK (40 ms). Our own Nagle does the same to the data set. No
# delay on our side and a quick ACK after each read or write take a C-STORE from ~90 ms to ~5 ms.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only; Linux resets it, so set it again each time
_QUICKACK_HANDLERS = (
    [
        (evt.EVT_DATA_SENT, lambda e: _set_socket_option(e, _QUICKACK)),
        (evt.EVT_DATA_RECV, lambda e: _set_socket_option(e, _QUICKACK)),
    ]
    if _QUICKACK is not None
    else []
)


def _associate(node: PacsNode, contexts: list[PresentationContext]) -> tuple[Association | None, Problem | None]:
    """Request an association; on failure return why, in words."""
    ae = _application_entity(node)
    opened_at: list[float] = []

    def on_open(event: evt.Event) -> None:
        opened_at.append(time.monotonic())
        _set_socket_option(event, socket.TCP_NODELAY)

    try:
        tls_args = (node.tls.ssl_context(), node.host) if node.tls is not None else None
    except ValueError as exc:
        return None, Problem(f"{node.label}: {exc}", False)
    started = time.monotonic()
    assoc = ae.associate(
        node.host,
        node.port,
        contexts=contexts,
        ae_title=node.called_ae_title,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open), *_QUICKACK_HANDLERS],
    )
    if assoc.is_established:
        return assoc, None
    _close(assoc)
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        result, source, diagnostic = answer.result, answer.result_source, answer.diagnostic
        reason = _REJECT_REASONS.get((source, diagnostic), f"reason {diagnostic} from source {source}")
        permanent = result == 0x01
        text = f"{node.label} rejected the association: {reason} ({'permanent' if permanent else 'transient'})"
        if (source, diagnostic) == (1, 7):
            text += f"; check the called AE title '{node.called_ae_title}'"
        elif (source, diagnostic) == (1, 3):
            text += f"; the PACS must list the calling AE title '{node.calling_ae_title}'"
        return None, Problem(text, not permanent)
    if not opened_at:
        return None, _diagnose_connect(node, time.monotonic() - started)
    if answer is not None and answer.result == 0x00:
        wanted = sorted({UID(cx.abstract_syntax).name for cx in contexts})
        return None, Problem(f"{node.label} accepted none of the requested SOP classes: {', '.join(wanted)}", False)
    waited = time.monotonic() - opened_at[0]
    if waited >= 0.95 * node.acse_timeout_s:
        return None, Problem(
            f"{node.label}: no answer within {seconds_text(node.acse_timeout_s)} to the association request", True
        )
    return None, Problem(f"{node.label} closed the connection during the association request", True)


def _close(assoc: Association) -> None:
    """Release an established association (abort if the release is not answered); abort anything else."""
    try:
        if assoc.is_established:
            assoc.release()
        if not assoc.is_released:
            assoc.abort()
    except Exception:  # closing must never hide the real outcome
        LOGGER.debug("closing the association failed", exc_info=True)


def echo(node: PacsNode) -> EchoResult:
    """C-ECHO: is the PACS there and does it accept us? One attempt, no retries."""
    started = time.monotonic()
    assoc, problem = _associate(node, [build_context(Verification)])
    if assoc is None:
        assert problem is not None
        return EchoResult(False, problem.text, time.monotonic() - started)
    sent_at = time.monotonic()
    try:
        status = assoc.send_c_echo()
    except RuntimeError:  # the peer dropped the association just after accepting it
        status = Dataset()
    finally:
        _close(assoc)
    waited = time.monotonic() - sent_at
    elapsed = time.monotonic() - started
    if "Status" not in status:
        return EchoResult(False, _lost_text(node, waited, "C-ECHO"), elapsed)
    code = int(status.Status)
    if code != 0x0000:
        return EchoResult(False, f"{node.label} answered C-ECHO with {describe_status(code)}", elapsed, code)
    return EchoResult(True, f"{node.label} answered C-ECHO in {elapsed * 1000:.0f} ms", elapsed, code)


def _lost_text(node: PacsNode, waited_s: float, what: str) -> str:
    limit = min(node.dimse_timeout_s, node.network_timeout_s)
    if waited_s >= 0.95 * limit:
        return f"{node.label}: no answer within {seconds_text(limit)} to {what}"
    return f"{node.label} closed the connection during {what}"


# ---------------------------------------------------------------------------------------------------------
# C-STORE


def _store_contexts(items: Iterable[CheckedFile]) -> list[PresentationContext]:
    """Per SOP class: one context for each compressed transfer syntax in use (only that syntax, so the
    file goes as it is), and one offering Explicit and Implicit VR Little Endian."""
    by_class: dict[UID, set[UID]] = {}
    for item in items:
        by_class.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax)
    contexts = []
    for sop_class, syntaxes in by_class.items():
        contexts.extend(build_context(sop_class, [syntax]) for syntax in sorted(syntaxes) if syntax not in UNCOMPRESSED)
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    return contexts


def _store_one(assoc: Association, node: PacsNode, item: CheckedFile, message_id: int) -> FileResult | Problem:
    """C-STORE one file: the PACS's answer, or a Problem when the association is lost."""
    try:
        ds = pydicom.dcmread(item.path)
    except (InvalidDicomError, OSError, EOFError) as exc:
        return FileResult(item.path, item.sop_instance_uid, "failed", f"cannot read the file ({exc})", bad_file=True)
    if not assoc.is_established:
        return Problem(f"{node.label} closed the connection before {item.path.name} was sent", True)
    try:
        try:
            sent_at = time.monotonic()
            status = assoc.send_c_store(ds, msg_id=message_id)
        except ValueError:
            if not item.transfer_syntax.is_compressed:
                raise
            # The PACS refused the file's own (compressed) syntax but may take it uncompressed.
            ds.decompress()
            sent_at = time.monotonic()
            status = assoc.send_c_store(ds, msg_id=message_id)
    except ValueError as exc:
        text = (
            f"the PACS accepted no presentation context for {item.sop_class_uid.name} "
            f"in {item.transfer_syntax.name} ({exc})"
        )
        return FileResult(item.path, item.sop_instance_uid, "failed", text)
    except RuntimeError:
        return Problem(f"{node.label} closed the connection before {item.path.name} was sent", True)
    if "Status" not in status:
        return Problem(_lost_text(node, time.monotonic() - sent_at, f"C-STORE of {item.path.name}"), True)
    code = int(status.Status)
    outcome = store_outcome(code)
    message = "" if outcome == "stored" else describe_status(code)
    comment = status.get("ErrorComment")
    if comment and message:
        message += f" ({comment})"
    return FileResult(item.path, item.sop_instance_uid, outcome, message, code)


def _store_worker(
    run: SendRun, node: PacsNode, contexts: list[PresentationContext], work: WorkQueue[CheckedFile], retry: RetryState
) -> None:
    """One association's share of a send: associate, then take a file, store it, take the next, until none
    is left; re-associate after a drop.

    A file is taken only over an established association, and one whose answer did not come goes back to
    the front of ``work`` (for this worker after it re-associates, or another): never lost, never sent by
    two associations at once, never sent again once answered."""
    message_id = 0
    while len(work) and not run.stopping():
        run.attempt()
        assoc, problem = _associate(node, contexts)
        if assoc is not None:
            try:
                while not run.stopping() and (taken := work.take()):
                    message_id = message_id % 65535 + 1
                    answer = _store_one(assoc, node, taken[0], message_id)
                    if isinstance(answer, Problem):
                        work.put_back(taken)
                        problem = answer
                        break
                    run.record(answer, retry)
            finally:
                _close(assoc)
        if problem is not None and not run.give_up_or_wait(problem, retry):
            return


def send_files(
    node: PacsNode,
    paths: Iterable[str | Path],
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
    associations: int = 1,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    on_result: ResultCallback | None = None,
) -> SendReport:
    """C-STORE DICOM Part 10 files over ``associations`` associations at once (each re-associating if the
    peer drops it), the files shared out one at a time as each association is free.

    ``progress`` gets a :class:`SendEvent` after each file's answer and before each retry; ``cancel``
    (e.g. ``threading.Event().is_set``) is checked between files and during the back-off; ``on_result``
    gets each file's answer as it arrives (the outbox removes a stored file there). With more than one
    association the callbacks run in the senders' threads, one call at a time.
    """
    check_associations(associations)
    files = [Path(p) for p in paths]
    run = SendRun(node, "C-STORE", files, retries, backoff_s, progress, cancel, on_result)
    # 1. read the headers; unreadable files fail now
    work = WorkQueue(readable_files(run, files))
    if not len(work):
        return run.finish(work)
    # 2. presentation contexts for every SOP class / transfer syntax in the batch
    contexts = _store_contexts(work.items())
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        run.report.error = (
            f"too many SOP class / transfer syntax combinations for one association ({len(contexts)} > "
            f"{MAX_PRESENTATION_CONTEXTS}): send the files in smaller groups"
        )
        return run.finish(work)
    # 3. each association: associate, store until done or dropped, re-associate after a drop
    run.run_workers(min(associations, len(work)), lambda retry: _store_worker(run, node, contexts, work, retry))
    return run.finish(work)
