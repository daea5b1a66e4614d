"""Send DICOM files to a PACS: C-ECHO, C-STORE and DICOMweb STOW-RS, with timeouts, retries and an outbox.

Everything here reports in plain words what went wrong ("PACS 'TEST' at 127.0.0.1:4243 rejected the
association: called AE title not recognised (permanent)") instead of raising, except for invalid input
(a bad node, a dataset that cannot be written), which raises ``ValueError`` at once.

Retry policy (DICOM PS3.8 A-ASSOCIATE-RJ results): a permanent rejection (result 0x01), a refused
password or a wrong URL is never retried; a transient rejection (0x02), a refused or dropped connection
and a timeout are retried with exponential back-off (``backoff_s * 2**k``). The retry count restarts
whenever a file gets an answer, so a peer that drops now and then still receives everything.

The :class:`Outbox` is a folder of files waiting to go, each queued for one node: a file is removed only
once that node's PACS has answered with a success (or warning) status for it, one by one, so an interrupted
send loses nothing and a resend sends only what is left. A file that is not a complete DICOM file (cut
short, not DICOM at all) is refused when it is queued, and one damaged while it waited is moved aside to
``failed/``: it never blocks the files behind it.

Credentials: STOW-RS never follows a redirect (a 302 would carry the Authorization header to another
address), and basic auth over plain http is reported as a warning before each send.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import logging
import math
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydicom
import pydicom.encaps
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification

from engine import paths
from engine.fileio import atomic_write_bytes

LOGGER = logging.getLogger(__name__)
# pynetdicom logs every refused connection or abort at ERROR level; this module turns each into one
# plain-words message for the caller, so its own log would only repeat it on users' consoles.
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

Outcome = Literal["stored", "warning", "failed"]
Method = Literal["c-store", "stow"]
ProgressCallback = Callable[["SendEvent"], None]
CancelCallback = Callable[[], bool]

MAX_PRESENTATION_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255
MAX_BACKOFF_S = 60.0
MAX_TIMEOUT_S = 3600.0  # an hour for one step of an exchange is already absurd; inf overflows pynetdicom
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_AE_TITLE_MAX = 16

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

# PS3.4 B.2.3 and PS3.7 C: C-STORE statuses; STOW-RS failure reasons use the same codes (PS3.18 10.5.3).
_STATUS_MEANINGS = {
    0x0000: "success",
    0x0107: "attribute list error",
    0x0110: "processing failure",
    0x0117: "invalid SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0x0210: "duplicate invocation",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
    0xC122: "transfer syntax not supported",
}
_WARNING_STATUSES = (0xB000, 0xB006, 0xB007)


def describe_status(code: int) -> str:
    """``0xA701`` -> ``"status 0xA701: out of resources"`` (C-STORE / STOW-RS status in words)."""
    meaning = _STATUS_MEANINGS.get(code)
    if meaning is None:
        if 0xA700 <= code <= 0xA7FF:
            meaning = "out of resources"
        elif 0xA900 <= code <= 0xA9FF:
            meaning = "data set does not match SOP class"
        elif 0xC000 <= code <= 0xCFFF:
            meaning = "cannot understand"
        else:
            meaning = "unknown status"
    return f"status 0x{code:04X}: {meaning}"


def store_outcome(code: int) -> Outcome:
    """0x0000 stored; 0xB000/0xB006/0xB007 stored with a warning; anything else failed."""
    if code == 0x0000:
        return "stored"
    if code in _WARNING_STATUSES:
        return "warning"
    return "failed"


# ---------------------------------------------------------------------------------------------------------
# Nodes


@dataclass(frozen=True)
class TlsSettings:
    """TLS for DICOM (and for an ``https`` DICOMweb URL). Empty ``ca_file`` = the system's trusted CAs."""

    ca_file: str = ""
    cert_file: str = ""  # our client certificate, for peers that want mutual TLS
    key_file: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("TLS: give both a client certificate file and its key file, or neither")

    def ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or None)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS: cannot load the CA file, certificate or key: {exc}") from exc
        return context


TIMEOUT_RULE = f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}"


def valid_timeout(value: object) -> bool:
    """A finite number of seconds in (0, MAX_TIMEOUT_S]: inf, nan, 1e12 or 0 would hang or overflow later."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S


def _check_ae_title(what: str, value: str) -> None:
    stripped = value.strip(" ")
    if not stripped or len(value) > _AE_TITLE_MAX:
        raise ValueError(f"{what} must be 1 to {_AE_TITLE_MAX} characters, got {value!r}")
    if any(not (0x20 <= ord(ch) < 0x7F) or ch == "\\" for ch in value):
        raise ValueError(f"{what} may hold only printable ASCII without backslash, got {value!r}")


@dataclass(frozen=True)
class PacsNode:
    """A PACS (or any DICOM storage SCP) as the desktop app stores it in its settings.

    Timeouts in seconds: ``connection_timeout_s`` for the TCP connect (and TLS handshake),
    ``acse_timeout_s`` for the answer to an association request or release, ``dimse_timeout_s`` for the
    answer to a C-ECHO / C-STORE, ``network_timeout_s`` for silence on an open connection (and for each
    DICOMweb request). ``dicomweb_password`` is kept in clear text by :meth:`to_dict`.
    """

    name: str
    host: str
    port: int
    called_ae_title: str
    calling_ae_title: str = "CXRSTUDIO"
    tls: TlsSettings | None = None
    connection_timeout_s: float = 10.0
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    dicomweb_url: str = ""
    dicomweb_user: str = ""
    dicomweb_password: str = field(default="", repr=False)  # never in a log line or a traceback

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a PACS node needs a name")
        if not self.host.strip():
            raise ValueError(f"PACS {self.name!r}: the host is empty")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"PACS {self.name!r}: the port must be an integer from 1 to 65535, got {self.port!r}")
        _check_ae_title(f"PACS {self.name!r}: the called AE title", self.called_ae_title)
        _check_ae_title(f"PACS {self.name!r}: the calling AE title", self.calling_ae_title)
        for name in ("connection_timeout_s", "acse_timeout_s", "dimse_timeout_s", "network_timeout_s"):
            value = getattr(self, name)
            if not valid_timeout(value):
                raise ValueError(f"PACS {self.name!r}: {name} {TIMEOUT_RULE}, got {value!r}")
        if self.dicomweb_url:
            scheme = urllib.parse.urlsplit(self.dicomweb_url).scheme
            if scheme not in ("http", "https"):
                raise ValueError(f"PACS {self.name!r}: the DICOMweb URL must start with http:// or https://")
        if self.dicomweb_password and not self.dicomweb_user:
            raise ValueError(f"PACS {self.name!r}: a DICOMweb password needs a user name")

    @property
    def label(self) -> str:
        return f"PACS '{self.name}' at {self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # nested TlsSettings becomes a dict too

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PacsNode:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PACS node settings: {', '.join(unknown)}")
        values = dict(data)
        tls = values.get("tls")
        if tls is not None:
            tls_known = {f.name for f in fields(TlsSettings)}
            tls_unknown = sorted(set(tls) - tls_known)
            if tls_unknown:
                raise ValueError(f"unknown PACS TLS settings: {', '.join(tls_unknown)}")
            values["tls"] = TlsSettings(**tls)
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FileResult:
    """The PACS's answer for one file. ``message`` is empty for a clean success. ``bad_file``: the file
    itself is unreadable or incomplete, so sending it again cannot help."""

    path: Path
    sop_instance_uid: str
    outcome: Outcome
    message: str = ""
    status: int | None = None
    bad_file: bool = False


@dataclass(frozen=True)
class SendEvent:
    """Progress of a send: after each file's answer (``result``), or a note such as a retry (``message``)."""

    done: int
    total: int
    result: FileResult | None = None
    message: str = ""


@dataclass
class SendReport:
    """What a send achieved. ``error`` says why it stopped early (None when it ran to the end)."""

    destination: str
    method: str
    total: int
    stored: list[FileResult] = field(default_factory=list)  # including those stored with a warning
    failed: list[FileResult] = field(default_factory=list)
    remaining: list[Path] = field(default_factory=list)  # never answered: still to send
    elapsed_s: float = 0.0
    attempts: int = 0  # associations (C-STORE) or HTTP requests (STOW-RS) tried
    error: str | None = None
    cancelled: bool = False

    @property
    def sent(self) -> int:
        return len(self.stored)

    @property
    def warnings(self) -> list[FileResult]:
        return [result for result in self.stored if result.outcome == "warning"]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled and not self.failed and not self.remaining

    def summary(self) -> str:
        warned = len(self.warnings)
        line = (
            f"{self.method} to {self.destination}: {self.sent} of {self.total} sent"
            f"{f' ({warned} with a warning)' if warned else ''}, {len(self.failed)} failed, "
            f"{len(self.remaining)} left, in {self.elapsed_s:.1f} s"
        )
        if self.cancelled:
            line += "; cancelled"
        if self.error:
            line += f"; stopped: {self.error}"
        elif self.failed:
            line += f"; first failure: {self.failed[0].path.name}: {self.failed[0].message}"
        return line


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    message: str
    elapsed_s: float
    status: int | None = None


@dataclass(frozen=True)
class _Problem:
    """Why an association or request failed, in words, and whether trying again may help."""

    text: str
    retryable: bool


# ---------------------------------------------------------------------------------------------------------
# Associations


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _application_entity(node: PacsNode) -> AE:
    ae = AE(ae_title=node.calling_ae_title)
    # pynetdicom's connection_timeout defaults to None (wait for ever): set every timeout.
    ae.connection_timeout = node.connection_timeout_s
    ae.acse_timeout = node.acse_timeout_s
    ae.dimse_timeout = node.dimse_timeout_s
    ae.network_timeout = node.network_timeout_s
    return ae


def _diagnose_connect(node: PacsNode, elapsed_s: float) -> _Problem:
    """pynetdicom only logs why a connect failed: try once more with a plain socket to say why."""
    prefix = f"cannot reach {node.label}"
    if elapsed_s >= 0.95 * node.connection_timeout_s:
        return _Problem(f"{prefix}: no answer within {_seconds(node.connection_timeout_s)} (check host and port)", True)
    try:
        with socket.create_connection((node.host, node.port), timeout=node.connection_timeout_s) as sock:
            if node.tls is not None:
                with node.tls.ssl_context().wrap_socket(sock, server_hostname=node.host):
                    pass
    except ConnectionRefusedError:
        return _Problem(f"{prefix}: connection refused: is the PACS running?", True)
    except TimeoutError:
        return _Problem(f"{prefix}: no answer within {_seconds(node.connection_timeout_s)} (check host and port)", True)
    except socket.gaierror as exc:
        return _Problem(f"{prefix}: unknown host name {node.host!r} ({exc.strerror})", False)
    except ssl.SSLCertVerificationError as exc:
        return _Problem(f"{prefix}: TLS certificate not trusted: {exc.verify_message} (check the CA file)", False)
    except ssl.SSLError as exc:
        return _Problem(f"{prefix}: TLS handshake failed: {exc.reason or exc} (check TLS settings)", False)
    except ValueError as exc:  # the TLS files could not be loaded
        return _Problem(f"{prefix}: {exc}", False)
    except OSError as exc:
        return _Problem(f"{prefix}: {exc.strerror or exc}", True)
    return _Problem(f"{prefix}: the connection failed, but a second try got through: try again", True)


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


def _associate(node: PacsNode, contexts: list[PresentationContext]) -> tuple[Association | None, _Problem | None]:
    """Request an association; on failure return why, in words."""
    ae = _application_entity(node)
    opened_at: list[float] = []

    def on_open(event: evt.Event) -> None:
        opened_at.append(time.monotonic())
        _set_socket_option(event, socket.TCP_NODELAY)

    try:
        tls_args = (node.tls.ssl_context(), node.host) if node.tls is not None else None
    except ValueError as exc:
        return None, _Problem(f"{node.label}: {exc}", False)
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
        return None, _Problem(text, not permanent)
    if not opened_at:
        return None, _diagnose_connect(node, time.monotonic() - started)
    if answer is not None and answer.result == 0x00:
        wanted = sorted({UID(cx.abstract_syntax).name for cx in contexts})
        return None, _Problem(f"{node.label} accepted none of the requested SOP classes: {', '.join(wanted)}", False)
    waited = time.monotonic() - opened_at[0]
    if waited >= 0.95 * node.acse_timeout_s:
        return None, _Problem(
            f"{node.label}: no answer within {_seconds(node.acse_timeout_s)} to the association request", True
        )
    return None, _Problem(f"{node.label} closed the connection during the association request", True)


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
        return f"{node.label}: no answer within {_seconds(limit)} to {what}"
    return f"{node.label} closed the connection during {what}"


# ---------------------------------------------------------------------------------------------------------
# Sending: shared loop pieces


@dataclass(frozen=True)
class _Item:
    path: Path
    sop_class_uid: UID
    sop_instance_uid: str
    transfer_syntax: UID


def _pixel_data_problem(ds: Dataset) -> str | None:
    """Why the pixel data cannot be whole, or None. pydicom reads a file cut short inside its pixel data
    without a word (it returns the bytes that are there), so count them: uncompressed pixel data holds
    rows x columns x samples x frames x BitsAllocated / 8 bytes (padded to an even length); encapsulated
    pixel data must end with its sequence delimiter and hold at least one fragment per frame."""
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return None  # parametric maps: rare, never ours; pydicom has read them whole
    if "PixelData" not in ds:
        # A file cut before its pixel data reads as a shorter data set: an image (it has Rows, or an
        # image storage class) without pixel data is a cut file; a report or presentation state has neither.
        image = "Rows" in ds or "Image Storage" in UID(ds.get("SOPClassUID", "")).name
        return "the pixel data is missing (is the file cut short?)" if image else None
    try:
        rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel") or 1)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return "the pixel data has no valid Rows, Columns or Bits Allocated"
    data = ds.PixelData
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if transfer_syntax.is_encapsulated:
        try:
            buffer = io.BytesIO(data)
            pydicom.encaps.parse_basic_offsets(buffer)
            fragments = sum(1 for _ in pydicom.encaps.generate_fragments(buffer))
        except (ValueError, EOFError) as exc:
            return f"the compressed pixel data is cut short or damaged ({exc})"
        if fragments < frames:
            return f"the compressed pixel data holds {fragments} fragment(s) for {frames} frame(s)"
        return None
    expected = (rows * columns * samples * frames * bits + 7) // 8
    if not expected <= len(data) <= expected + 1:
        shape = f"{rows}x{columns}x{frames}" + (f" with {samples} samples" if samples != 1 else "")
        return f"the pixel data holds {len(data)} bytes, {shape} at {bits} bits needs {expected}"
    return None


def _cut_element(ds: Dataset) -> str | None:
    """The first element whose value is shorter than its header says (pydicom keeps what is there)."""
    for element in ds.elements():
        length, value = getattr(element, "length", None), getattr(element, "value", None)
        if isinstance(length, int) and length != 0xFFFFFFFF and isinstance(value, bytes) and len(value) < length:
            return f"element {Tag(element.tag)} is cut short: {len(value)} of {length} bytes"
    return None


def _checked_item(source: str | Path | io.BytesIO, path: Path) -> _Item:
    """Read a whole DICOM Part 10 file and check it is complete; ValueError in words when it is not."""
    try:
        with warnings.catch_warnings():
            # pydicom only warns when the file ends inside a sequence or encapsulated pixel data
            warnings.filterwarnings("error", message="End of file reached before delimiter")
            ds = pydicom.dcmread(source)
    except UserWarning as exc:
        raise ValueError(f"the file is cut short ({exc})") from exc
    except FileNotFoundError as exc:
        raise ValueError("file not found") from exc
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise ValueError(f"not a readable DICOM Part 10 file ({exc})") from exc
    except Exception as exc:  # pydicom fails on garbage in many ways (struct, Unicode, value errors)
        raise ValueError(f"not a readable DICOM Part 10 file ({type(exc).__name__}: {exc})") from exc
    meta = ds.file_meta
    transfer_syntax = meta.get("TransferSyntaxUID")
    # The data set's own UIDs, not the file meta's copies: a file cut early still has its meta group.
    sop_class, sop_instance = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
    if not transfer_syntax or not sop_class or not sop_instance:
        problem = _cut_element(meta) or _cut_element(ds) or "no Transfer Syntax, SOP Class or SOP Instance UID"
        raise ValueError(f"not a complete DICOM Part 10 file ({problem})")
    problem = _pixel_data_problem(ds) or _cut_element(ds)
    if problem is not None:
        raise ValueError(problem)
    return _Item(path, UID(sop_class), str(sop_instance), UID(transfer_syntax))


def _read_item(path: Path) -> _Item:
    """A DICOM Part 10 file, read whole and checked complete; ValueError in words when it is not one."""
    return _checked_item(path, path)


class _Run:
    """Book-keeping shared by C-STORE and STOW-RS: results, events, back-off, cancel."""

    def __init__(
        self,
        node: PacsNode,
        method: str,
        paths: Sequence[Path],
        retries: int,
        backoff_s: float,
        progress: ProgressCallback | None,
        cancel: CancelCallback | None,
        on_result: Callable[[FileResult], None] | None,
    ) -> None:
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must not be negative")
        self.node = node
        self.retries = retries
        self.backoff_s = backoff_s
        self.progress = progress
        self.cancel = cancel
        self.on_result = on_result
        self.started = time.monotonic()
        self.report = SendReport(destination=node.label, method=method, total=len(paths))
        self.failures_in_a_row = 0
        self.first_problem: _Problem | None = None  # of the current run of failures

    def cancelled(self) -> bool:
        if self.cancel is not None and self.cancel():
            self.report.cancelled = True
        return self.report.cancelled

    def note(self, message: str) -> None:
        if self.progress is not None:
            self.progress(SendEvent(self._done(), self.report.total, message=message))

    def record(self, result: FileResult) -> None:
        (self.report.failed if result.outcome == "failed" else self.report.stored).append(result)
        self.failures_in_a_row = 0  # the peer answers: a later drop gets a full set of retries
        self.first_problem = None
        if self.on_result is not None:
            self.on_result(result)
        if self.progress is not None:
            self.progress(SendEvent(self._done(), self.report.total, result=result))

    def _done(self) -> int:
        return len(self.report.stored) + len(self.report.failed)

    def give_up_or_wait(self, problem: _Problem) -> bool:
        """After a failed attempt: True to try again (after the back-off), False to stop."""
        self.failures_in_a_row += 1
        attempts = self.failures_in_a_row
        first = self.first_problem = self.first_problem or problem
        if not problem.retryable or attempts > self.retries:
            notes = [f"gave up after {attempts} attempts"] if attempts > 1 else []
            if first.text != problem.text:
                notes.append(f"first: {first.text}")
            self.report.error = problem.text + (f" ({'; '.join(notes)})" if notes else "")
            return False
        delay = min(self.backoff_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
        self.note(f"{problem.text}; trying again in {delay:.3g} s (attempt {attempts + 1} of {self.retries + 1})")
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self.cancelled():
                return False
            time.sleep(min(left, 0.1))
        return not self.cancelled()

    def finish(self, remaining: Iterable[_Item]) -> SendReport:
        self.report.remaining = [item.path for item in remaining]
        self.report.elapsed_s = time.monotonic() - self.started
        return self.report


def _readable_items(run: _Run, paths: Sequence[Path]) -> list[_Item]:
    items = []
    for path in paths:
        try:
            items.append(_read_item(path))
        except ValueError as exc:
            run.record(FileResult(path, "", "failed", str(exc), bad_file=True))
    return items


# ---------------------------------------------------------------------------------------------------------
# C-STORE


def _store_contexts(items: Iterable[_Item]) -> list[PresentationContext]:
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


def _store_one(assoc: Association, node: PacsNode, item: _Item, message_id: int) -> FileResult | _Problem:
    """C-STORE one file: the PACS's answer, or a _Problem when the association is lost."""
    try:
        ds = pydicom.dcmread(item.path)
    except (InvalidDicomError, OSError, EOFError) as exc:
        return FileResult(item.path, item.sop_instance_uid, "failed", f"cannot read the file ({exc})", bad_file=True)
    if not assoc.is_established:
        return _Problem(f"{node.label} closed the connection before {item.path.name} was sent", True)
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
        return _Problem(f"{node.label} closed the connection before {item.path.name} was sent", True)
    if "Status" not in status:
        return _Problem(_lost_text(node, time.monotonic() - sent_at, f"C-STORE of {item.path.name}"), True)
    code = int(status.Status)
    outcome = store_outcome(code)
    message = "" if outcome == "stored" else describe_status(code)
    comment = status.get("ErrorComment")
    if comment and message:
        message += f" ({comment})"
    return FileResult(item.path, item.sop_instance_uid, outcome, message, code)


def _c_store(
    node: PacsNode,
    paths: Sequence[Path],
    *,
    retries: int,
    backoff_s: float,
    progress: ProgressCallback | None,
    cancel: CancelCallback | None,
    on_result: Callable[[FileResult], None] | None,
) -> SendReport:
    run = _Run(node, "C-STORE", paths, retries, backoff_s, progress, cancel, on_result)
    # 1. read the headers; unreadable files fail now
    queue = deque(_readable_items(run, paths))
    if not queue:
        return run.finish(queue)
    # 2. presentation contexts for every SOP class / transfer syntax in the batch
    contexts = _store_contexts(queue)
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        run.report.error = (
            f"too many SOP class / transfer syntax combinations for one association ({len(contexts)} > "
            f"{MAX_PRESENTATION_CONTEXTS}): send the files in smaller groups"
        )
        return run.finish(queue)
    # 3. associate, store until done or dropped, re-associate after a drop
    message_id = 0
    while queue and not run.cancelled():
        run.report.attempts += 1
        assoc, problem = _associate(node, contexts)
        if assoc is not None:
            try:
                while queue and not run.cancelled():
                    message_id = message_id % 65535 + 1
                    answer = _store_one(assoc, node, queue[0], message_id)
                    if isinstance(answer, _Problem):
                        problem = answer
                        break
                    queue.popleft()
                    run.record(answer)
            finally:
                _close(assoc)
        if problem is not None and not run.give_up_or_wait(problem):
            break
    return run.finish(queue)


def send_files(
    node: PacsNode,
    paths: Iterable[str | Path],
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> SendReport:
    """C-STORE DICOM Part 10 files over one association (re-associating if the peer drops it).

    ``progress`` gets a :class:`SendEvent` after each file's answer and before each retry; ``cancel``
    (e.g. ``threading.Event().is_set``) is checked between files and during the back-off.
    """
    return _c_store(
        node,
        [Path(p) for p in paths],
        retries=retries,
        backoff_s=backoff_s,
        progress=progress,
        cancel=cancel,
        on_result=None,
    )


# ---------------------------------------------------------------------------------------------------------
# STOW-RS


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: urllib would repeat the request, Authorization header included, at whatever
    address the Location names (another port, another host). The 3xx then arrives as an HTTPError."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _http_opener(node: PacsNode, url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "::1", "localhost"):
        handlers.append(urllib.request.ProxyHandler({}))  # never hand loopback traffic to a proxy
    if url.startswith("https:"):
        context = node.tls.ssl_context() if node.tls is not None else ssl.create_default_context()
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def _multipart(files: Sequence[bytes]) -> tuple[bytes, str]:
    boundary = f"cxr-studio-{uuid.uuid4().hex}"
    body = io.BytesIO()
    for data in files:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"))
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode("ascii"))
    return body.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _json_values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag) or {}
    return list(element.get("Value") or [])


def _stow_answers(body: bytes) -> tuple[dict[str, int | None], dict[str, int | None]] | None:
    """Referenced (stored: uid -> warning code) and failed (uid -> failure code) from a DICOM JSON answer."""
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, list):  # some servers wrap the dataset in a list
        data = data[0] if data else {}
    if not isinstance(data, dict) or ("00081199" not in data and "00081198" not in data):
        return None

    def codes(sequence: str, reason: str) -> dict[str, int | None]:
        answers: dict[str, int | None] = {}
        for entry in _json_values(data, sequence):
            uids = _json_values(entry, "00081155")
            reasons = _json_values(entry, reason)
            if uids:
                answers[str(uids[0])] = int(reasons[0]) if reasons else None
        return answers

    return codes("00081199", "00081196"), codes("00081198", "00081197")


def _http_problem(node: PacsNode, url: str, exc: Exception) -> _Problem:
    where = f"DICOMweb server {url}"
    if isinstance(exc, urllib.error.HTTPError):
        code = exc.code
        words = f"HTTP {code} {exc.reason}"
        if 300 <= code < 400:
            location = exc.headers.get("Location", "") if exc.headers is not None else ""
            target = urllib.parse.urljoin(url, location) if location else "an address it did not name"
            why = "so the password goes nowhere else" if node.dicomweb_user else "for safety"
            return _Problem(
                f"{where} redirected the request to {target} (HTTP {code}); redirects are not followed, {why}: "
                "set the DICOMweb URL to the final address",
                False,
            )
        if code == 401:
            return _Problem(f"{where} refused the user name or password ({words})", False)
        if code == 403:
            return _Problem(f"{where} does not allow user '{node.dicomweb_user}' to store ({words})", False)
        if code in (404, 405):
            return _Problem(f"{where} has no STOW-RS service there ({words}): check the DICOMweb URL", False)
        if code == 413:
            return _Problem(f"{where} finds the request too large ({words}): send fewer files per request", False)
        if code in (408, 429) or code >= 500:
            return _Problem(f"{where} is busy or failing ({words})", True)
        return _Problem(f"{where} refused the request ({words})", False)
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return _Problem(f"cannot reach {where}: connection refused: is the PACS running?", True)
    if isinstance(reason, TimeoutError | socket.timeout):
        return _Problem(f"{where}: no answer within {_seconds(node.network_timeout_s)}", True)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return _Problem(f"{where}: TLS certificate not trusted: {reason.verify_message} (check the CA file)", False)
    if isinstance(reason, socket.gaierror):
        return _Problem(f"cannot reach {where}: unknown host name ({reason.strerror})", False)
    if isinstance(reason, ConnectionError):
        return _Problem(f"{where} closed the connection ({reason})", True)
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return _Problem(f"cannot reach {where}: {text}", True)


def _stow_batch(
    node: PacsNode, opener: urllib.request.OpenerDirector, url: str, batch: Sequence[_Item]
) -> list[FileResult] | _Problem:
    # 1. body: each file as it is, one part each
    blobs, results = [], []
    for item in batch:
        try:
            blobs.append(item.path.read_bytes())
        except OSError as exc:
            message = f"cannot read the file ({exc})"
            results.append(FileResult(item.path, item.sop_instance_uid, "failed", message, bad_file=True))
    readable = [item for item in batch if not any(r.path == item.path for r in results)]
    if not readable:
        return results
    body, content_type = _multipart(blobs)
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    request.add_header("Accept", "application/dicom+json")
    if node.dicomweb_user:
        token = base64.b64encode(f"{node.dicomweb_user}:{node.dicomweb_password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    # 2. post; 409 (all failed) and 202 (some failed) still carry the per-instance answer
    try:
        with opener.open(request, timeout=node.network_timeout_s) as response:
            code, answer = response.status, response.read()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            return _http_problem(node, url, exc)
        code, answer = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return _http_problem(node, url, exc)
    # 3. per instance: referenced (stored, maybe with a warning) or failed
    parsed = _stow_answers(answer)
    if parsed is None:
        outcome: Outcome = "stored" if code == 200 else "failed"
        message = "" if code == 200 else f"HTTP {code} without a per-instance answer"
        return results + [FileResult(item.path, item.sop_instance_uid, outcome, message) for item in readable]
    referenced, failed = parsed
    for item in readable:
        uid = item.sop_instance_uid
        if uid in failed:
            reason = failed[uid]
            message = describe_status(reason) if reason is not None else "failed (no reason given)"
            results.append(FileResult(item.path, uid, "failed", message, reason))
        elif uid in referenced:
            warning = referenced[uid]
            if warning is None or warning == 0:
                results.append(FileResult(item.path, uid, "stored"))
            else:
                results.append(FileResult(item.path, uid, "warning", describe_status(warning), warning))
        else:
            results.append(FileResult(item.path, uid, "failed", "the server's answer does not mention this instance"))
    return results


def _check_stow_settings(node: PacsNode, batch_size: int) -> None:
    if not node.dicomweb_url:
        raise ValueError(f"{node.label} has no DICOMweb URL for STOW-RS")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _stow(
    node: PacsNode,
    paths: Sequence[Path],
    *,
    batch_size: int,
    retries: int,
    backoff_s: float,
    progress: ProgressCallback | None,
    cancel: CancelCallback | None,
    on_result: Callable[[FileResult], None] | None,
) -> SendReport:
    _check_stow_settings(node, batch_size)
    run = _Run(node, "STOW-RS", paths, retries, backoff_s, progress, cancel, on_result)
    run.report.destination = f"DICOMweb {node.dicomweb_url} ({node.name})"
    url = node.dicomweb_url.rstrip("/") + "/studies"
    queue = deque(_readable_items(run, paths))
    try:
        opener = _http_opener(node, url)
    except ValueError as exc:  # TLS files that cannot be loaded
        run.report.error = f"DICOMweb server {url}: {exc}"
        return run.finish(queue)
    if node.dicomweb_user and urllib.parse.urlsplit(url).scheme == "http":
        warning = f"warning: the password for user '{node.dicomweb_user}' goes to {url} unencrypted (plain http)"
        run.note(warning)  # the CLI prints notes, the app shows them
    while queue and not run.cancelled():
        batch = [queue[i] for i in range(min(batch_size, len(queue)))]
        run.report.attempts += 1
        answer = _stow_batch(node, opener, url, batch)
        if isinstance(answer, _Problem):
            if not run.give_up_or_wait(answer):
                break
            continue
        for _ in batch:
            queue.popleft()
        for result in answer:
            run.record(result)
    return run.finish(queue)


def stow_rs(
    node: PacsNode,
    paths: Iterable[str | Path],
    *,
    batch_size: int = 20,
    retries: int = 3,
    backoff_s: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> SendReport:
    """DICOMweb STOW-RS: ``POST {dicomweb_url}/studies``, ``batch_size`` files per multipart request."""
    return _stow(
        node,
        [Path(p) for p in paths],
        batch_size=batch_size,
        retries=retries,
        backoff_s=backoff_s,
        progress=progress,
        cancel=cancel,
        on_result=None,
    )


# ---------------------------------------------------------------------------------------------------------
# Outbox


class OutboxError(OSError):
    """The outbox could not keep a file (full disk, no permission)."""


def _write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """:func:`engine.fileio.atomic_write_bytes`, with a full disk or missing permission as OutboxError."""
    try:
        atomic_write_bytes(path, data, durable=durable)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutboxError(
                exc.errno,
                f"the disk is full: could not write {path.name} ({len(data) / 1e6:.1f} MB) to {path.parent}; "
                "nothing was written",
            ) from exc
        if isinstance(exc, PermissionError):
            raise OutboxError(exc.errno, f"no permission to write {path.name} in {path.parent}") from exc
        raise


def _part10_bytes(dataset: Dataset) -> bytes:
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise ValueError("the dataset has no file meta Transfer Syntax UID: cannot write it as a DICOM file")
    if "SOPInstanceUID" not in dataset or "SOPClassUID" not in dataset:
        raise ValueError("the dataset has no SOP Class UID or SOP Instance UID")
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Attempts:
    """How often the outbox has tried to send one file, and what went wrong last."""

    attempts: int
    last_error: str | None
    last_attempt: str  # ISO 8601, UTC


class Outbox:
    """A folder of DICOM files waiting for their PACS node, with a JSON log of the attempts (``attempts.json``).

    Each file is queued for one node: ``NAME.dcm`` has a tag ``NAME.node.json`` that names it, written
    before the file (a crash between the two leaves a tag without a file, which nothing reads). A send
    to a node takes only that node's files. A file without a tag was queued by an earlier version, for
    whichever node was used next: it is never sent until :meth:`assign` gives it a node.

    One process sends from a folder at a time (sends from one ``Outbox`` object are serialised). A file
    is deleted only after the PACS answered success or warning for it; a crash between that answer and
    the deletion can send that one file again, which a PACS stores once (same SOP Instance UID). A file
    that turns out unreadable or incomplete is moved to ``failed/`` with its reason: no retry can help it.
    """

    LOG_NAME = "attempts.json"
    FAILED_FOLDER = "failed"
    TAG_SUFFIX = ".node.json"

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else paths.user_data_dir() / "outbox"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def put(self, item: Dataset | str | Path, node: str) -> Path:
        """Check a dataset or DICOM file whole, and copy it into the outbox for ``node`` (a node name).

        Returns the queued file's path. Raises ValueError naming the file when it is not a complete DICOM
        Part 10 file (nothing is queued then). A file already waiting for the same node with the same SOP
        Instance UID is replaced, so it is not sent twice.
        """
        if not isinstance(node, str) or not node.strip():
            raise ValueError(f"a queued file needs the name of its PACS node, got {node!r}")
        # 1. the bytes, read and checked whole (a file cut short in its pixel data reads without error)
        if isinstance(item, Dataset):
            data, source = _part10_bytes(item), Path(str(item.get("SOPInstanceUID", "dataset")))
        else:
            source = Path(item)
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {source}: {exc.strerror or exc}") from exc
        try:
            sop_instance_uid = _checked_item(io.BytesIO(data), source).sop_instance_uid
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from exc
        # 2. its node's tag, then the file, each atomically, under a name that sorts in arrival order
        safe_uid = "".join(ch for ch in sop_instance_uid if ch.isdigit() or ch == ".")
        target = self.folder / f"{time.time_ns():020d}_{safe_uid}.dcm"
        tag = self._tag(target)
        _write_atomic(tag, json.dumps({"node": node}).encode("utf-8"))
        try:
            _write_atomic(target, data)
        except BaseException:
            tag.unlink(missing_ok=True)
            raise
        # 3. drop an older copy of the same instance for the same node
        for older in self.folder.glob(f"*_{safe_uid}.dcm"):
            if older != target and self.node_of(older) == node:
                self._remove(older)
        return target

    def node_of(self, path: Path) -> str | None:
        """The node a queued file waits for; None for a file from an earlier version (or a damaged tag)."""
        try:
            data = json.loads(self._tag(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        node = data.get("node") if isinstance(data, dict) else None
        return node if isinstance(node, str) and node else None

    def pending(self, node: str | None = None) -> list[Path]:
        """Files waiting to be sent, oldest first: all of them, or only those queued for ``node``."""
        files = sorted(self.folder.glob("*.dcm"))
        return files if node is None else [path for path in files if self.node_of(path) == node]

    def unassigned(self) -> list[Path]:
        """Waiting files that belong to no node (queued by an earlier version): never sent by themselves."""
        return [path for path in self.pending() if self.node_of(path) is None]

    def assign(self, node: str, files: Iterable[Path] | None = None) -> list[Path]:
        """Queue files that belong to no node (default: all of them) for ``node``; returns those files."""
        if not isinstance(node, str) or not node.strip():
            raise ValueError(f"a queued file needs the name of its PACS node, got {node!r}")
        chosen = self.unassigned() if files is None else [Path(f) for f in files if self.node_of(Path(f)) is None]
        for path in chosen:
            _write_atomic(self._tag(path), json.dumps({"node": node}).encode("utf-8"))
        return chosen

    def failed(self) -> list[Path]:
        """Files moved aside because they are unreadable or incomplete (see :meth:`failure_reason`)."""
        return sorted((self.folder / self.FAILED_FOLDER).glob("*.dcm"))

    def failure_reason(self, path: Path) -> str:
        try:
            data = json.loads(self._tag(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "no reason recorded"
        reason = data.get("error") if isinstance(data, dict) else None
        return reason if isinstance(reason, str) else "no reason recorded"

    def attempts(self) -> dict[str, Attempts]:
        """File name -> :class:`Attempts`, for files that have been tried and are still waiting."""
        attempts = {}
        for name, entry in self._read_log().items():
            with contextlib.suppress(TypeError):  # a hand-edited entry: ignore it
                attempts[name] = Attempts(**entry)
        return attempts

    def send(
        self,
        node: PacsNode,
        method: Method = "c-store",
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
        batch_size: int = 20,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
    ) -> SendReport:
        """Send every file queued for ``node``; each is removed as soon as its success arrives.

        A file found unreadable or incomplete is failed with its reason and moved to ``failed/``.
        """
        if method not in ("c-store", "stow"):
            raise ValueError(f"method must be 'c-store' or 'stow', got {method!r}")
        if method == "stow":
            _check_stow_settings(node, batch_size)
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must not be negative")
        with self._lock:
            files = self.pending(node.name)
            log = {name: entry for name, entry in self._read_log().items() if (self.folder / name).exists()}
            errors: dict[str, str] = {}

            def on_result(result: FileResult) -> None:
                if result.outcome == "failed":
                    errors[result.path.name] = result.message
                    if result.bad_file:  # no retry can mend it: out of the queue, kept for a look
                        self._set_aside(result.path, result.message)
                        log.pop(result.path.name, None)
                    return
                try:
                    self._remove(result.path)
                except OSError:
                    LOGGER.warning("stored %s but could not remove it from the outbox", result.path, exc_info=True)
                log.pop(result.path.name, None)

            report: SendReport | None = None
            try:
                if method == "c-store":
                    report = _c_store(
                        node,
                        files,
                        retries=retries,
                        backoff_s=backoff_s,
                        progress=progress,
                        cancel=cancel,
                        on_result=on_result,
                    )
                else:
                    report = _stow(
                        node,
                        files,
                        batch_size=batch_size,
                        retries=retries,
                        backoff_s=backoff_s,
                        progress=progress,
                        cancel=cancel,
                        on_result=on_result,
                    )
            finally:
                now = datetime.now(UTC).isoformat(timespec="seconds")
                stop_reason = report.error if report is not None else None
                fallback = "cancelled" if cancel is not None and cancel() else "not sent"
                for path in files:
                    if not path.exists():
                        continue
                    previous = log.get(path.name)
                    count = previous.get("attempts", 0) if isinstance(previous, dict) else 0
                    log[path.name] = {
                        "attempts": (count if isinstance(count, int) else 0) + 1,
                        "last_error": errors.get(path.name) or stop_reason or fallback,
                        "last_attempt": now,
                    }
                self._write_log(log)
            return report

    def _tag(self, path: Path) -> Path:
        return path.with_name(path.stem + self.TAG_SUFFIX)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._tag(path).unlink(missing_ok=True)

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move a bad file (and its tag, now with the reason) to ``failed/``; on failure leave it be."""
        aside = self.folder / self.FAILED_FOLDER
        tag = {"node": self.node_of(path), "error": reason}
        try:
            aside.mkdir(exist_ok=True)
            os.replace(path, aside / path.name)  # first: out of the queue, whatever happens next
            _write_atomic(self._tag(aside / path.name), json.dumps(tag).encode("utf-8"), durable=False)
            self._tag(path).unlink(missing_ok=True)
        except OSError:
            LOGGER.warning("could not move the bad file %s aside", path, exc_info=True)

    def _read_log(self) -> dict[str, dict[str, Any]]:
        path = self.folder / self.LOG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            LOGGER.warning("ignoring an unreadable outbox log %s", path, exc_info=True)
            return {}
        return data if isinstance(data, dict) else {}

    def _write_log(self, log: dict[str, dict[str, Any]]) -> None:
        try:
            _write_atomic(self.folder / self.LOG_NAME, json.dumps(log, indent=1).encode("utf-8"), durable=False)
        except OSError:  # the log is advice; the files themselves are what matters
            LOGGER.warning("could not write the outbox log in %s", self.folder, exc_info=True)
