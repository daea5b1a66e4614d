"""What every way of sending to a PACS shares: the node, its timeouts, the results, and the send loop.

:class:`PacsNode` is a PACS as the user configures it; :class:`SendReport` / :class:`SendEvent` /
:class:`FileResult` are what a send reports, in plain words ("PACS 'TEST' at 127.0.0.1:4243 rejected the
association: called AE title not recognised (permanent)") instead of raising, except for invalid input
(a bad node, a dataset that cannot be written), which raises ``ValueError`` at once. ``dimse`` sends by
C-ECHO / C-STORE, ``stow`` by DICOMweb STOW-RS, ``outbox`` keeps the files waiting for them.

Retry policy (DICOM PS3.8 A-ASSOCIATE-RJ results): a permanent rejection (result 0x01), a refused
password or a wrong URL is never retried; a transient rejection (0x02), a refused or dropped connection
and a timeout are retried with exponential back-off (``backoff_s * 2**k``). The retry count restarts
whenever a file gets an answer, so a peer that drops now and then still receives everything.

Every file is read whole and checked complete before it is sent or queued (:func:`check_file`): a file
cut short or not DICOM at all fails with its reason and never blocks the files behind it.

Parallel sends (``associations`` > 1): that many worker threads take files from one shared
:class:`WorkQueue`, each over its own association (or its own HTTP requests). A file is taken by one
worker only, and only once it is associated; a file whose answer never came goes back to the front of
the queue, so nothing goes to two peers' connections at once and nothing answered goes again. Each worker
keeps its own retry count; one that gives up (a PACS that takes fewer associations than asked, say)
leaves the files to the others, and the run reports why it stopped only when files remain.
:class:`SendRun` records results under one lock, so progress events, ``on_result`` and the report count
every file once, in order.
"""

from __future__ import annotations

import io
import math
import ssl
import threading
import time
import urllib.parse
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import pydicom
import pydicom.encaps
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

Outcome = Literal["stored", "warning", "failed"]
ProgressCallback = Callable[["SendEvent"], None]
CancelCallback = Callable[[], bool]
ResultCallback = Callable[["FileResult"], None]
T = TypeVar("T")

MAX_BACKOFF_S = 60.0
MAX_ASSOCIATIONS = 32  # parallel associations / requests per send; more only queue up at the PACS
MAX_TIMEOUT_S = 3600.0  # an hour for one step of an exchange is already absurd; inf overflows pynetdicom
_AE_TITLE_MAX = 16

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
class Problem:
    """Why an association or request failed, in words, and whether trying again may help."""

    text: str
    retryable: bool


# ---------------------------------------------------------------------------------------------------------
# Sending: shared loop pieces


def seconds_text(value: float) -> str:
    return f"{value:g} s"


def check_associations(value: object) -> int:
    """``value`` as a count of parallel associations; ValueError unless it is an int from 1 to MAX_ASSOCIATIONS."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ASSOCIATIONS:
        raise ValueError(f"associations must be a whole number from 1 to {MAX_ASSOCIATIONS}, got {value!r}")
    return value


@dataclass(frozen=True)
class CheckedFile:
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


def check_file(source: str | Path | io.BytesIO, path: Path) -> CheckedFile:
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
    return CheckedFile(path, UID(sop_class), str(sop_instance), UID(transfer_syntax))


def _read_file(path: Path) -> CheckedFile:
    """A DICOM Part 10 file, read whole and checked complete; ValueError in words when it is not one."""
    return check_file(path, path)


@dataclass
class RetryState:
    """One worker's run of failed attempts: restarts at each answer the peer gives that worker."""

    failures_in_a_row: int = 0
    first_problem: Problem | None = None  # of the current run of failures


class WorkQueue(Generic[T]):
    """The files (or anything) still to send, shared by the workers of one send: each item is taken once."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = deque(items)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def take(self, count: int = 1) -> list[T]:
        """Up to ``count`` items from the front, oldest first (empty when none are left)."""
        with self._lock:
            return [self._items.popleft() for _ in range(min(count, len(self._items)))]

    def put_back(self, items: Sequence[T]) -> None:
        """Items taken but not answered: back to the front, in their order, for the report's ``remaining``."""
        with self._lock:
            self._items.extendleft(reversed(items))

    def items(self) -> list[T]:
        with self._lock:
            return list(self._items)


class SendRun:
    """Book-keeping shared by C-STORE and STOW-RS: results, events, back-off, cancel.

    Thread-safe: parallel workers record results, notes and attempts under one lock (callbacks run
    under it too, so they are never called twice at once), each with its own :class:`RetryState`.
    """

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
        self.retry = RetryState()  # the calling thread's, when it sends by itself
        self.lock = threading.RLock()
        self.halted = threading.Event()  # a worker raised (or Ctrl-C): the others stop too
        self.workers_left = 1
        self.gave_up: str | None = None  # why the first worker to give up did; the run's error if files remain

    def cancelled(self) -> bool:
        if self.cancel is not None and self.cancel():
            self.report.cancelled = True
        return self.report.cancelled

    def stopping(self) -> bool:
        """Cancelled, or another worker gave up: take no further file."""
        return self.halted.is_set() or self.cancelled()

    def attempt(self) -> None:
        """Count an association or HTTP request tried."""
        with self.lock:
            self.report.attempts += 1

    def note(self, message: str) -> None:
        with self.lock:
            if self.progress is not None:
                self.progress(SendEvent(self._done(), self.report.total, message=message))

    def record(self, result: FileResult, retry: RetryState | None = None) -> None:
        retry = retry or self.retry
        retry.failures_in_a_row = 0  # the peer answers: a later drop gets a full set of retries
        retry.first_problem = None
        with self.lock:
            (self.report.failed if result.outcome == "failed" else self.report.stored).append(result)
            if self.on_result is not None:
                self.on_result(result)
            if self.progress is not None:
                self.progress(SendEvent(self._done(), self.report.total, result=result))

    def _done(self) -> int:
        return len(self.report.stored) + len(self.report.failed)

    def give_up_or_wait(self, problem: Problem, retry: RetryState | None = None) -> bool:
        """After a failed attempt: True to try again (after the back-off), False to stop.

        A worker that gives up stops; the others carry on with the files. The first one's reason becomes
        the report's error if files are left at the end (:meth:`finish`)."""
        retry = retry or self.retry
        retry.failures_in_a_row += 1
        attempts = retry.failures_in_a_row
        first = retry.first_problem = retry.first_problem or problem
        if self.halted.is_set():
            return False
        if not problem.retryable or attempts > self.retries:
            notes = [f"gave up after {attempts} attempts"] if attempts > 1 else []
            if first.text != problem.text:
                notes.append(f"first: {first.text}")
            text = problem.text + (f" ({'; '.join(notes)})" if notes else "")
            with self.lock:
                self.gave_up = self.gave_up or text
                others = self.workers_left - 1
            if others:
                self.note(f"{text}; this connection stops, {others} other(s) carry on")
            return False
        delay = min(self.backoff_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
        self.note(f"{problem.text}; trying again in {delay:.3g} s (attempt {attempts + 1} of {self.retries + 1})")
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self.stopping():
                return False
            time.sleep(min(left, 0.1))
        return not self.stopping()

    def run_workers(self, count: int, work: Callable[[RetryState], None]) -> None:
        """Run ``work`` in ``count`` threads at once, each with its own RetryState, and wait for all.

        One worker runs in the calling thread itself (the app's worker thread, as before). An exception
        in a worker (or Ctrl-C here) halts the others after their file in flight and is raised here."""
        if count <= 1:
            work(self.retry)
            return

        self.workers_left = count

        def guarded(retry: RetryState) -> None:
            try:
                work(retry)
            except BaseException:
                self.halted.set()
                raise
            finally:
                with self.lock:
                    self.workers_left -= 1

        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="pacs-send") as pool:
            futures = [pool.submit(guarded, RetryState()) for _ in range(count)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self.halted.set()  # the pool's exit then waits for the others to put their files back
                raise

    def finish(self, remaining: Iterable[CheckedFile] | WorkQueue[CheckedFile]) -> SendReport:
        left = remaining.items() if isinstance(remaining, WorkQueue) else remaining
        self.report.remaining = [item.path for item in left]
        if self.report.remaining and self.report.error is None:
            self.report.error = self.gave_up
        self.report.elapsed_s = time.monotonic() - self.started
        return self.report


def readable_files(run: SendRun, paths: Sequence[Path]) -> list[CheckedFile]:
    items = []
    for path in paths:
        try:
            items.append(_read_file(path))
        except ValueError as exc:
            run.record(FileResult(path, "", "failed", str(exc), bad_file=True))
    return items
