"""Extraction of durable memories from chat turns.

Submodules: ``models`` (the shared :class:`~memstore.extract.models.Candidate` type), ``gate`` (the cheap
check that decides whether a turn is worth extracting from), ``rules_based`` (the offline, no-LLM
extractor), plus the LLM extractor, its prompts and reconciliation.
"""
