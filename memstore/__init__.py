"""memstore: personalization memory for any chat model.

    from memstore import MemoryClient
    client = MemoryClient()            # instead of openai.OpenAI()
    client.chat.completions.create(model="gpt-4.1-mini", messages=[...], user="alice")

Importing memstore is cheap: torch, sentence-transformers, chromadb and litellm load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memstore.config import MemoryConfig
from memstore.errors import (
    ConfigError,
    ExtractionError,
    ImportFormatError,
    InvalidInputError,
    LLMError,
    MemstoreError,
    NotFoundError,
    StorageError,
)

if TYPE_CHECKING:
    from adapters.openai_client import AsyncMemoryClient, MemoryClient
    from memstore.context import Context
    from memstore.memory import Memory
    from memstore.profiles import Profile
    from memstore.records import MemoryEvent, MemoryHit, MemoryOp, MemoryRecord, StyleRule

__version__ = "0.1.0"

_LAZY = {
    "Memory": "memstore.memory",
    "MemoryClient": "adapters.openai_client",
    "AsyncMemoryClient": "adapters.openai_client",
    "Context": "memstore.context",
    "Profile": "memstore.profiles",
    "MemoryRecord": "memstore.records",
    "MemoryHit": "memstore.records",
    "MemoryOp": "memstore.records",
    "MemoryEvent": "memstore.records",
    "StyleRule": "memstore.records",
}

__all__ = [
    "AsyncMemoryClient",
    "ConfigError",
    "Context",
    "ExtractionError",
    "ImportFormatError",
    "InvalidInputError",
    "LLMError",
    "Memory",
    "MemoryClient",
    "MemoryConfig",
    "MemoryEvent",
    "MemoryHit",
    "MemoryOp",
    "MemoryRecord",
    "MemstoreError",
    "NotFoundError",
    "Profile",
    "StorageError",
    "StyleRule",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memstore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
