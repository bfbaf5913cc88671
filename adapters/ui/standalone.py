"""``memstore ui``: the inspector alone, over a store, without the proxy.

``create_app(memory)`` builds the ASGI app; ``run`` serves it with uvicorn; ``ThreadedServer`` serves it on a
free local port in a background thread (for embedding it in a program, for tests and screenshots).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

from fastapi import FastAPI
from memstore.adapters.server.keys import KeyStore
from memstore.adapters.ui.auth import secure_headers
from memstore.adapters.ui.inspector import UiBackend
from memstore.adapters.ui.routes import create_router
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

if TYPE_CHECKING:
    from memstore.memory import Memory
    from memstore.worker import Worker


def create_app(memory: Memory, *, worker: Worker | None = None, secret: bytes | None = None) -> FastAPI:
    """The inspector over ``memory`` (its proxy keys live in the same database). ``worker``: extracts turns
    retried from the outbox page in this process (None: they wait for another worker)."""
    backend = UiBackend(memory=memory, keys=KeyStore(memory.engine), worker=worker)
    app = FastAPI(title="memstore inspector", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(create_router(lambda _request: backend, secret=secret))

    @app.get("/", include_in_schema=False)
    def root(_request: Request) -> Response:
        return secure_headers(RedirectResponse("/ui/", status_code=307))

    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ThreadedServer:
    """Serves an ASGI app with uvicorn on ``host:port`` in a daemon thread: ``with ThreadedServer(app) as s:``
    then ``s.url``. Leaving the block stops it."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="memstore-ui", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the inspector did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def run(memory: Memory, host: str = "127.0.0.1", port: int = 8766, *, worker: Worker | None = None,
        log_level: str = "warning") -> None:
    """Serves the inspector until interrupted."""
    import uvicorn

    uvicorn.run(create_app(memory, worker=worker), host=host, port=port, log_level=log_level, access_log=False)
