"""Retrieval beyond the raw model: vector transforms and query-time re-ranking."""
