"""Exception types raised by memstore. Every public failure is one of these."""

from __future__ import annotations


class MemstoreError(Exception):
    """Base class of every error memstore raises on purpose."""


class InvalidInputError(MemstoreError, ValueError):
    """The caller passed something memstore cannot accept (empty text, wrong type, too long ...)."""


class NotFoundError(MemstoreError, LookupError):
    """No memory, rule, turn or profile with that id exists in the caller's scope."""


class ImportFormatError(InvalidInputError):
    """An export file is corrupted, truncated or of an unknown format version."""


class ConfigError(MemstoreError):
    """The configuration is inconsistent or a backend cannot be reached."""


class StorageError(MemstoreError):
    """The database or vector index failed."""


class LLMError(MemstoreError):
    """The model call failed (after retries) or returned something unusable."""


class ExtractionError(LLMError):
    """The extractor could not produce valid operations for a batch of turns."""
