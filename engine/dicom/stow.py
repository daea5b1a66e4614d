"""DICOMweb STOW-RS: ``POST {dicomweb_url}/studies`` over HTTP(S), several files per multipart request.

With ``associations`` > 1, that many requests are in flight at once, each worker taking the next batch
from the shared queue (see ``pacs``).

Credentials: STOW-RS never follows a redirect (a 302 would carry the Authorization header to another
address), and basic auth over plain http is reported as a warning before each send.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.dicom.pacs import (
    CancelCallback,
    CheckedFile,
    FileResult,
    Outcome,
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
)


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


def _http_problem(node: PacsNode, url: str, exc: Exception) -> Problem:
    where = f"DICOMweb server {url}"
    if isinstance(exc, urllib.error.HTTPError):
        code = exc.code
        words = f"HTTP {code} {exc.reason}"
        if 300 <= code < 400:
            location = exc.headers.get("Location", "") if exc.headers is not None else ""
            target = urllib.parse.urljoin(url, location) if location else "an address it did not name"
            why = "so the password goes nowhere else" if node.dicomweb_user else "for safety"
            return Problem(
                f"{where} redirected the request to {target} (HTTP {code}); redirects are not followed, {why}: "
                "set the DICOMweb URL to the final address",
                False,
            )
        if code == 401:
            return Problem(f"{where} refused the user name or password ({words})", False)
        if code == 403:
            return Problem(f"{where} does not allow user '{node.dicomweb_user}' to store ({words})", False)
        if code in (404, 405):
            return Problem(f"{where} has no STOW-RS service there ({words}): check the DICOMweb URL", False)
        if code == 413:
            return Problem(f"{where} finds the request too large ({words}): send fewer files per request", False)
        if code in (408, 429) or code >= 500:
            return Problem(f"{where} is busy or failing ({words})", True)
        return Problem(f"{where} refused the request ({words})", False)
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return Problem(f"cannot reach {where}: connection refused: is the PACS running?", True)
    if isinstance(reason, TimeoutError | socket.timeout):
        return Problem(f"{where}: no answer within {seconds_text(node.network_timeout_s)}", True)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return Problem(f"{where}: TLS certificate not trusted: {reason.verify_message} (check the CA file)", False)
    if isinstance(reason, socket.gaierror):
        return Problem(f"cannot reach {where}: unknown host name ({reason.strerror})", False)
    if isinstance(reason, ConnectionError):
        return Problem(f"{where} closed the connection ({reason})", True)
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return Problem(f"cannot reach {where}: {text}", True)


def _stow_batch(
    node: PacsNode, opener: urllib.request.OpenerDirector, url: str, batch: Sequence[CheckedFile]
) -> list[FileResult] | Problem:
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


def check_stow_settings(node: PacsNode, batch_size: int) -> None:
    """ValueError when ``node`` cannot take STOW-RS (no DICOMweb URL) or ``batch_size`` is below 1."""
    if not node.dicomweb_url:
        raise ValueError(f"{node.label} has no DICOMweb URL for STOW-RS")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _stow_worker(
    run: SendRun, node: PacsNode, url: str, batch_size: int, work: WorkQueue[CheckedFile], retry: RetryState
) -> None:
    """One request at a time: take a batch, post it, record the answers, take the next; a batch that got no
    answer goes back to the front of ``work`` before the back-off (for this worker or another).

    Each worker has its own opener: urllib's handlers are not meant to be shared between threads."""
    opener = _http_opener(node, url)
    while not run.stopping() and (batch := work.take(batch_size)):
        run.attempt()
        answer = _stow_batch(node, opener, url, batch)
        if isinstance(answer, Problem):
            work.put_back(batch)
            if not run.give_up_or_wait(answer, retry):
                return
            continue
        for result in answer:
            run.record(result, retry)


def stow_rs(
    node: PacsNode,
    paths: Iterable[str | Path],
    *,
    batch_size: int = 20,
    retries: int = 3,
    backoff_s: float = 1.0,
    associations: int = 1,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    on_result: ResultCallback | None = None,
) -> SendReport:
    """DICOMweb STOW-RS: ``POST {dicomweb_url}/studies``, ``batch_size`` files per multipart request, up to
    ``associations`` requests at once.

    ``progress``, ``cancel`` and ``on_result`` as for :func:`engine.dicom.dimse.send_files`.
    """
    files = [Path(p) for p in paths]
    check_stow_settings(node, batch_size)
    check_associations(associations)
    run = SendRun(node, "STOW-RS", files, retries, backoff_s, progress, cancel, on_result)
    run.report.destination = f"DICOMweb {node.dicomweb_url} ({node.name})"
    url = node.dicomweb_url.rstrip("/") + "/studies"
    work = WorkQueue(readable_files(run, files))
    try:
        _http_opener(node, url)  # TLS files that cannot be loaded: said once, before any worker starts
    except ValueError as exc:
        run.report.error = f"DICOMweb server {url}: {exc}"
        return run.finish(work)
    if node.dicomweb_user and urllib.parse.urlsplit(url).scheme == "http":
        warning = f"warning: the password for user '{node.dicomweb_user}' goes to {url} unencrypted (plain http)"
        run.note(warning)  # the CLI prints notes, the app shows them
    requests = -(-len(work) // batch_size)  # no more workers than batches
    run.run_workers(min(associations, requests), lambda retry: _stow_worker(run, node, url, batch_size, work, retry))
    return run.finish(work)
