"""memstore: personalization memory for any chat model.

    from memstore import MemoryClient
    client = MemoryClient()            # instead of openai.OpenAI()
    client.chat.completions.create(model="gpt-4.1-mini", messages=[...], user="alice")

Importing memstore is cheap: torch, sentence-transformers, chromadb and litellm load on first use.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
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
    from memstore.adapters.openai.client import AsyncMemoryClient, MemoryClient
    from memstore.instructions.profiles import Profile
    from memstore.memory import Memory
    from memstore.recall.context import Context
    from memstore.records import MemoryEvent, MemoryHit, MemoryOp, MemoryRecord, StyleRule

__version__ = "0.1.0"


class _SourceTreeAdapters(importlib.abc.MetaPathFinder):
    """In a source checkout (an editable install, or tests run from the repo) the ``adapters/`` folder sits
    beside ``memstore/``; the wheel ships it inside, as ``memstore/adapters``. This finder serves
    ``memstore.adapters`` from the folder beside, so the one import name works in both. Nothing installs or
    imports a top-level ``adapters`` package (PyPI's unrelated ``adapters`` would clash with it)."""

    _NAME = "memstore.adapters"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self._NAME:
            return None
        return importlib.util.spec_from_file_location(
            fullname, self.folder / "__init__.py", submodule_search_locations=[str(self.folder)])


def _mount_source_adapters() -> None:
    here = Path(__file__).resolve().parent
    beside = here.parent / "adapters"
    if (here / "adapters").is_dir() or not (beside / "__init__.py").is_file():
        return  # an installed wheel (memstore/adapters exists) or no adapters at all
    if not any(isinstance(f, _SourceTreeAdapters) for f in sys.meta_path):
        sys.meta_path.append(_SourceTreeAdapters(beside))


_mount_source_adapters()

_LAZY = {
    "Memory": "memstore.memory",
    "MemoryClient": "memstore.adapters.openai.client",
    "AsyncMemoryClient": "memstore.adapters.openai.client",
    "Context": "memstore.recall.context",
    "Profile": "memstore.instructions.profiles",
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
