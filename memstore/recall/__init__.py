"""Finding and rendering what a request needs: the retriever (search), the context builder (what fits in the
token budget) and pure rendering of the injected block (inject)."""
