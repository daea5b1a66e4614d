"""Real PACS peers on 127.0.0.1 for tests: Orthanc (with DICOMweb), dcmtk storescp, and a black hole.

Each starts on free loopback ports, waits until it answers, and is always stopped (terminate, then
kill) when its ``with`` block ends, also when the test fails. The helpers skip the calling test, with
the reason, when the server is not installed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest

LOOPBACK = "127.0.0.1"
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_INSTALL_HINT = "./studio test installs it"
# Loopback only: never let urllib hand a request to a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _require(executable: str, package: str) -> str:
    path = shutil.which(executable)
    if path is None:
        pytest.skip(f"{executable} (Debian {package}) is not installed; {_INSTALL_HINT}")
    return path


def _require_dcmtk(executable: str) -> str:
    """dcmtk's tool, not pynetdicom's console script of the same name (it lands in the venv's bin)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which(executable, path=folder) if folder else None
        if candidate is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10).stdout
            if "dcmtk" in version:
                return candidate
    pytest.skip(f"{executable} (Debian dcmtk) is not installed; {_INSTALL_HINT}")


def _stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    if process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=STOP_TIMEOUT_S)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class StartFailed(RuntimeError):
    """The server exited at start or another one answers on its port (a race for a "free" port)."""


START_ATTEMPTS = 3  # a first start picks fresh ports after a StartFailed


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartFailed(f"{what} exited with code {process.returncode} at start:\n{_log_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            time.sleep(0.05)  # a server that lost the race for its port exits at once
            if process.poll() is not None:
                raise StartFailed(f"{what} exited with code {process.returncode} at start:\n{_log_tail(log)}")
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S:g} s:\n{_log_tail(log)}")


class _ServerProcess:
    """Start, stop and kill, the same for every server here (the dataclasses below hold the fields)."""

    process: subprocess.Popen[bytes] | None
    started_once: bool  # a restart keeps its ports (clients know them)
    log_path: Path

    def _launch(
        self, command: Callable[[], list[str]], wait: Callable[[], None], new_ports: Callable[[], None]
    ) -> None:
        """Run ``command()`` and ``wait()`` until it answers; a first start that loses the race for its
        "free" port (StartFailed) tries again on ``new_ports()``, up to START_ATTEMPTS times."""
        for attempt in range(START_ATTEMPTS):
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            try:
                wait()
            except StartFailed:
                self.stop()
                if self.started_once or attempt == START_ATTEMPTS - 1:
                    raise
                new_ports()
                continue
            except BaseException:
                self.stop()
                raise
            self.started_once = True
            return

    def start(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Started; stopped when the ``with`` block ends, also when the test fails."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug would."""
        if self.process is not None:
            _stop(self.process, kill=True)
            self.process = None


# ---------------------------------------------------------------------------------------------------------
# Orthanc


@dataclass
class OrthancServer(_ServerProcess):
    """An Orthanc with the DICOMweb plugin; its storage survives :meth:`kill` / :meth:`start`."""

    directory: Path
    aet: str = "PACSTEST"
    user: str = "cxr"
    password: str = "studio-test-password"
    dicom_threads: int = 4  # Orthanc's default: associations beyond it wait for a free thread
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    name: str = field(default_factory=lambda: f"cxr-studio-test-{uuid.uuid4().hex[:12]}")
    process: subprocess.Popen[bytes] | None = None
    started_once: bool = False

    def __post_init__(self) -> None:
        while self.http_port == self.dicom_port:
            self.http_port = free_port()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.directory / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {},
            "DicomThreadsCount": self.dicom_threads,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "index"),
            "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
        }

    def start(self) -> None:
        executable = _require("Orthanc", "orthanc")
        if not ORTHANC_DICOMWEB_PLUGIN.exists():
            pytest.skip(f"the Orthanc DICOMweb plugin (Debian orthanc-dicomweb) is not installed; {_INSTALL_HINT}")
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "orthanc.json"

        def command() -> list[str]:
            config_path.write_text(json.dumps(self.config(), indent=1), encoding="utf-8")  # the ports may be new
            return [executable, str(config_path)]

        def new_ports() -> None:
            self.dicom_port, self.http_port = free_port(), free_port()
            self.__post_init__()

        self._launch(command, self._wait_until_ready, new_ports)

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartFailed(f"Orthanc exited with code {self.process.returncode}:\n{_log_tail(self.log_path)}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                system = self.get_json("/system")
                # Another test run may have raced us to a "free" port: make sure this is our Orthanc.
                if system.get("Name") != self.name or system.get("DicomPort") != self.dicom_port:
                    raise StartFailed(f"port {self.http_port} answers as another Orthanc: {system.get('Name')}")
                _wait_for_port(self.dicom_port, self.process, self.log_path, "Orthanc")
                return
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S:g} s:\n{_log_tail(self.log_path)}")

    # REST ------------------------------------------------------------------------------------------------
    def _request(self, path: str) -> urllib.request.Request:
        request = urllib.request.Request(self.url + path)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
        return request

    def get(self, path: str) -> bytes:
        with _OPENER.open(self._request(path), timeout=10) as response:
            return response.read()

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def instances(self) -> list[tuple[str, str]]:
        """(SOP Instance UID, Orthanc id) for every stored instance, one row per stored instance."""
        rows = self.get_json("/instances?expand")
        return [(row["MainDicomTags"]["SOPInstanceUID"], row["ID"]) for row in rows]

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.get(f"/instances/{orthanc_id}/file")


def orthanc(directory: Path, **settings: Any) -> contextlib.AbstractContextManager[OrthancServer]:
    return OrthancServer(directory, **settings).running()


# ---------------------------------------------------------------------------------------------------------
# dcmtk storescp


@dataclass
class StoreScp(_ServerProcess):
    """dcmtk ``storescp -od DIR``: stores whatever arrives (it accepts any called AE title)."""

    directory: Path
    aet: str = "TESTSCP"
    port: int = field(default_factory=free_port)
    unique_filenames: bool = False  # +uf: a file received twice is kept twice (duplicates show)
    fork: bool = False  # --fork: one child per association, so several associations run at once
    tls_key: Path | None = None
    tls_cert: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_once: bool = False

    @property
    def log_path(self) -> Path:
        return self.directory.parent / f"{self.directory.name}-storescp.log"

    def start(self) -> None:
        executable = _require_dcmtk("storescp")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [executable, "-aet", self.aet, "-od", str(self.directory)]
        if self.unique_filenames:
            command.append("+uf")
        if self.fork:  # without it storescp serves one association at a time and the others wait
            command.append("--fork")
        if self.tls_key is not None and self.tls_cert is not None:
            command += ["+tls", str(self.tls_key), str(self.tls_cert), "-pw", "-ic"]

        def wait() -> None:
            assert self.process is not None
            _wait_for_port(self.port, self.process, self.log_path, "storescp")

        def new_port() -> None:
            self.port = free_port()

        self._launch(lambda: [*command, str(self.port)], wait, new_port)

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.rglob("*") if p.is_file())


def storescp(directory: Path, **settings: Any) -> contextlib.AbstractContextManager[StoreScp]:
    return StoreScp(directory, **settings).running()


# ---------------------------------------------------------------------------------------------------------
# A black hole: accepts TCP connections and never says a word


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """Yield the port of a server that accepts connections, reads nothing and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(16)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                connection, _ = listener.accept()
                accepted.append(connection)

    thread = threading.Thread(target=hold, name="black-hole", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


# ---------------------------------------------------------------------------------------------------------
# Pytest fixtures


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc shared by a test module (tests use fresh UIDs, so they do not see each other)."""
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def storescp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    with storescp(tmp_path_factory.mktemp("storescp") / "received") as server:
        yield server
