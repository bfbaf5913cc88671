"""The web memory inspector at ``/ui``: see and edit what memstore remembers, in a browser.

``memstore serve`` serves it beside the proxy (``server_router``); ``memstore ui`` serves it alone over a store
(``standalone.create_app``). Both sign in with an admin proxy key (``memstore keys create --admin``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memstore.adapters.ui.inspector import UiBackend
from memstore.adapters.ui.routes import create_router

if TYPE_CHECKING:
    from fastapi import APIRouter


def server_router() -> APIRouter:
    """The inspector over ``memstore serve``'s own store, keys and extraction worker."""
    from memstore.adapters.server.state import state_of
    from starlette.requests import Request

    def backend(request: Request) -> UiBackend:
        st = state_of(request)
        worker = st.client.worker
        return UiBackend(memory=st.memory, keys=st.keys, worker=worker if worker.running else None)

    return create_router(backend)


__all__ = ["UiBackend", "create_router", "server_router"]
