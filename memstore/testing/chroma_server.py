"""A local chroma server (``chroma run`` from this environment) for tests and benchmarks.

    proc, url = start_chroma_server(Path("/tmp/chroma-data"))   # 127.0.0.1, a free port, telemetry off
    ...
    stop(proc)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["chroma_alive", "free_port", "start_chroma_server", "stop"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chroma_alive(url: str, timeout: float = 2.0) -> bool:
    """Whether a chroma server answers its heartbeat at ``url``."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/v2/heartbeat", timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


def start_chroma_server(path: Path, port: int | None = None,
                        timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], str]:
    """Starts ``chroma run --path PATH`` on 127.0.0.1 and waits until it answers. Returns the process and
    its URL; its output goes to ``chroma-PORT.log`` beside ``path``."""
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if exe is None:
        raise RuntimeError("the chroma executable (from the chromadb package) is not installed")
    port = port or free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path.parent / f"chroma-{port}.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen([exe, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chroma_alive(url, 1.0):
            return proc, url
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"chroma server did not start on {url}; see {log.name}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
