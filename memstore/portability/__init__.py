"""Portability: export a user's data in one versioned format (exports), import such a file safely (imports),
forget a user, and list users."""

from memstore.portability.checks import MAX_IMPORT_BYTES, MAX_IMPORT_ROWS, ImportLimits
from memstore.portability.exports import FORMAT, SECTIONS, VERSION, export_user, forget_rest, list_users
from memstore.portability.imports import import_data

__all__ = ["FORMAT", "MAX_IMPORT_BYTES", "MAX_IMPORT_ROWS", "SECTIONS", "VERSION", "ImportLimits", "export_user",
           "forget_rest", "import_data", "list_users"]
