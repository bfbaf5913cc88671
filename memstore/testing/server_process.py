"""Run ``memstore serve`` as a child process: for tests, benchmarks and scripts that need a real server.

    with ServerProcess(home=tmp, args=["--upstream-base-url", llm.base_url]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=key)

The child is ``python -m memstore.adapters.server.app --host 127.0.0.1 --port N --home HOME ...``; ``start`` waits for
``/healthz``. ``kill()`` is SIGKILL (a crash), ``stop()`` a graceful SIGTERM. Output goes to
``HOME/server-PORT.log``, shown in the error if the server does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One ``memstore serve`` child process on 127.0.0.1."""

    def __init__(self, home: str | Path, args: list[str] | None = None, *, port: int | None = None,
                 env: dict[str, str] | None = None, python: str = sys.executable) -> None:
        self.home = Path(home)
        self.args = list(args or [])
        self.port = port or free_port()
        self.python = python
        self.env = {**os.environ, **(env or {})}
        for k, v in {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "TOKENIZERS_PARALLELISM": "false", "NO_PROXY": "127.0.0.1,localhost"}.items():
            self.env.setdefault(k, v)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), self.env.get("PYTHONPATH")) if p)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``openai.OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def log_path(self) -> Path:
        return self.home / f"server-{self.port}.log"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, "-m", "memstore.adapters.server.app", "--host", "127.0.0.1", "--port", str(self.port),
               "--home", str(self.home), *self.args]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memstore serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"memstore serve did not become healthy in {timeout}s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
