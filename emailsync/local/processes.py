"""Ports and child processes of the local stand-ins (emulators, each in its own process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import requests


def free_port() -> int:
    """A loopback port that is free now (a local stand-in binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """TERM the process group of `process` (started with `start_new_session=True`), KILL it after
    `timeout` seconds, so nothing the child forked outlives it."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


class EmulatorProcess:
    """An emulator child process: started in its own process group on a free port (`port` if given),
    waited for until ready, always stopped by whoever started it (`with` or `start()` / `stop()`).

    Subclasses say how to run it (`_command`, `_prepare`) and when it is ready (`_ready`); its output
    goes to a log in a temporary work directory that lives as long as the process.
    """

    label: ClassVar[str] = "emulator"  # in error messages
    work_dir_prefix: ClassVar[str] = "emulator-"
    poll_interval: ClassVar[float] = 0.1

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._work_dir: tempfile.TemporaryDirectory[str] | None = None
        self._session = requests.Session()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        """The command line; raises if the emulator is not installed (before anything is started)."""
        raise NotImplementedError

    def _prepare(self, work_dir: Path) -> dict[str, Any]:
        """Extra `subprocess.Popen` arguments (cwd, env), after writing any config into `work_dir`."""
        return {}

    def _ready(self) -> bool:
        """Whether the emulator answers; the Google Cloud emulators say "Ok" at their root."""
        return self._session.get(self.base_url + "/", timeout=1).text.strip() == "Ok"

    def start(self, timeout: float = 60.0) -> Self:
        command = self._command()
        self._work_dir = tempfile.TemporaryDirectory(prefix=self.work_dir_prefix)
        work = Path(self._work_dir.name)
        options = self._prepare(work)
        with (work / "emulator.log").open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: stop() kills it and anything it forks
                **options,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.label} exited early:\n{tail}")
            with contextlib.suppress(requests.RequestException, ValueError):
                if self._ready():
                    return self
            time.sleep(self.poll_interval)
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"{self.label} not ready after {timeout}s:\n{tail}")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process_group(process)
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self._work_dir is None:
            return ""
        try:
            text = (Path(self._work_dir.name) / "emulator.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
