"""Ways into memstore's core, shipped as ``memstore.adapters``.

Import them from ``memstore`` (``memstore.MemoryClient``), not from here."""
