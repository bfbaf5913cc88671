"""``memstore serve``: the OpenAI-compatible proxy (app), the memory REST API, proxy keys and limits."""
