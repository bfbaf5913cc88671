"""Where memories live: the SQL database (the truth), the vector index kept in step with it, the per-scope
vector cache, lexical search and the embedder. Nothing here calls a model."""
