"""Credentials stay where they belong: no redirect carries them, the nodes file is private from its first
byte, passwords need not be typed on the command line, and timeouts are sane numbers."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import math
import os
import pty
import select
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.dicom import nodes, stow
from engine.dicom.pacs import PacsNode
from tests.engine.test_pacs import write_files
from tests.pacs_servers import LOOPBACK

REPO = Path(__file__).resolve().parents[2]

PASSWORD = "topsecret"


@contextlib.contextmanager
def http_server(answer: int, location: str = "") -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP server answering every request with ``answer`` (and ``location``); it records the
    method, path and Authorization header of each request it gets."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            seen.append({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization", "")})
            self.send_response(answer)
            if location:
                self.send_header("Location", location)
            body = b"{}"
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _web_node(url: str) -> PacsNode:
    return PacsNode(
        "WEB", LOOPBACK, 104, "PACS", dicomweb_url=url, dicomweb_user="alice", dicomweb_password=PASSWORD,
        network_timeout_s=5,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Item 4: redirects and plain http


def test_stow_refuses_a_redirect_and_never_sends_the_password_on(tmp_path: Path) -> None:
    files = write_files(tmp_path / "src", 1, seed=31)
    with http_server(200) as (elsewhere, elsewhere_seen), http_server(302, f"{elsewhere}/steal") as (origin, _):
        report = stow.stow_rs(_web_node(f"{origin}/dicom-web"), files, retries=2, backoff_s=0.01)

    assert elsewhere_seen == [], f"the redirect was followed: {elsewhere_seen}"
    assert report.error == (
        f"DICOMweb server {origin}/dicom-web/studies redirected the request to {elsewhere}/steal (HTTP 302); "
        "redirects are not followed, so the password goes nowhere else: set the DICOMweb URL to the final address"
    )
    assert report.attempts == 1, "a redirect is permanent, not retried"
    assert report.remaining == files


def test_basic_auth_over_plain_http_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXR_TEST_PACS_PASSWORD", PASSWORD)
    files = write_files(tmp_path / "src", 1, seed=32)
    notes: list[str] = []
    with http_server(200) as (url, seen):
        stow.stow_rs(_web_node(f"{url}/dicom-web"), files, progress=lambda e: notes.append(e.message))
    assert seen and seen[0]["auth"].startswith("Basic ")
    warning = f"warning: the password for user 'alice' goes to {url}/dicom-web/studies unencrypted (plain http)"
    assert warning in notes

    assert main(["pacs", "add", "web", "--host", LOOPBACK, "--port", "104", "--aet", "PACS", "--dicomweb-url",
                 f"{url}/dicom-web", "--user", "alice", "--password-env", "CXR_TEST_PACS_PASSWORD"]) == 0  # fmt: skip
    assert "unencrypted (plain http)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Item 4: the password off the command line, the nodes file private, repr


def _add_web(*options: str) -> int:
    return main(["pacs", "add", "web", "--host", LOOPBACK, "--port", "104", "--aet", "PACS",
                 "--dicomweb-url", "https://pacs.example.org/dicom-web", "--user", "alice", *options])  # fmt: skip


def test_password_from_stdin_environment_or_prompt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert _add_web("--password-stdin") == 0
    assert nodes.get_node("web").dicomweb_password == "from stdin"

    monkeypatch.setenv("CXR_TEST_PACS_PASSWORD", "from env")
    assert _add_web("--password-env", "CXR_TEST_PACS_PASSWORD") == 0
    assert nodes.get_node("web").dicomweb_password == "from env"

    monkeypatch.delenv("CXR_TEST_PACS_PASSWORD")
    capsys.readouterr()
    assert _add_web("--password-env", "CXR_TEST_PACS_PASSWORD") == 2
    err = capsys.readouterr().err
    assert err == "cxr-studio pacs: error: --password-env: the environment variable CXR_TEST_PACS_PASSWORD is not set\n"

    prompts: list[str] = []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or "typed")
    assert _add_web() == 0
    assert prompts == ["DICOMweb password for alice at https://pacs.example.org/dicom-web: "]
    assert nodes.get_node("web").dicomweb_password == "typed"

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert _add_web("--password-stdin") == 2
    assert "--password-stdin: nothing to read on standard input" in capsys.readouterr().err


def _run_on_a_terminal(argv: list[str], answer: str, timeout_s: float = 60.0) -> str:
    """Run ``python -m engine.cli ARGV`` on a new pseudo-terminal (its controlling tty, where getpass
    reads), type ``answer`` once it asks, and return everything it wrote there."""
    pid, master = pty.fork()
    if pid == 0:  # the child: never returns to pytest
        try:
            os.chdir(REPO)
            os.execv(sys.executable, [sys.executable, "-m", "engine.cli", *argv])
        finally:
            os._exit(127)
    output, answered, deadline = b"", False, time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and b"password for" in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


def test_password_prompt_on_a_real_terminal_does_not_echo() -> None:
    argv = ["pacs", "add", "web", "--host", LOOPBACK, "--port", "104", "--aet", "PACS",
            "--dicomweb-url", "https://pacs.example.org/dicom-web", "--user", "alice"]  # fmt: skip
    output = _run_on_a_terminal(argv, "typed on the tty")
    assert "DICOMweb password for alice at https://pacs.example.org/dicom-web:" in output
    assert "typed on the tty" not in output, "the password was echoed"
    assert nodes.get_node("web").dicomweb_password == "typed on the tty"


def test_nodes_file_and_its_temporary_file_are_private_from_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "config" / "pacs_nodes.json"
    target.parent.mkdir()
    target.write_text('{"nodes": []}')  # an older file, made with the usual umask
    os.chmod(target, 0o644)
    modes: list[int] = []
    real_replace = os.replace

    def replace_and_note(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        modes.append(stat.S_IMODE(os.stat(src).st_mode))  # the temporary file, just before it becomes the file
        real_replace(src, dst)

    old_umask = os.umask(0o022)
    try:
        monkeypatch.setattr(os, "replace", replace_and_note)
        nodes.save_nodes({"web": _web_node("https://pacs.example.org/dicom-web")}, target)
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_node_repr_hides_the_password() -> None:
    node = _web_node("https://pacs.example.org/dicom-web")
    assert PASSWORD not in repr(node) and PASSWORD not in str(node)
    assert "alice" in repr(node)


# ---------------------------------------------------------------------------------------------------------
# Item 8: timeouts


BAD_TIMEOUTS = [math.inf, 1e12, math.nan, 0, -1, 3601]


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_node_refuses_timeouts_that_are_not_sane(value: float) -> None:
    with pytest.raises(ValueError, match=r"network_timeout_s must be a number of seconds above 0 and at most 3600"):
        PacsNode("X", LOOPBACK, 104, "PACS", network_timeout_s=value)


def test_a_hand_edited_nodes_file_with_an_infinite_timeout_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pacs_nodes.json"
    entry = PacsNode("X", LOOPBACK, 104, "PACS").to_dict() | {"dimse_timeout_s": 1e400}
    path.write_text(json.dumps({"nodes": [entry]}).replace("Infinity", "1e400"))
    with pytest.raises(ValueError, match="dimse_timeout_s must be a number of seconds above 0") as caught:
        nodes.load_nodes(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["inf", "1e12", "nan", "0", "-5"])
def test_pacs_add_refuses_a_bad_timeout(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pacs", "add", "x", "--host", LOOPBACK, "--port", "104", "--aet", "PACS", "--timeout", text])
    assert code == 2
    assert capsys.readouterr().err == (
        f"cxr-studio pacs: error: --timeout must be a number of seconds above 0 and at most 3600, got {text}\n"
    )
    assert not nodes.nodes_file().exists()
