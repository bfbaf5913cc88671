"""Ways into memstore's core. Import them from ``memstore`` (``memstore.MemoryClient``), not from here."""
