"""Persistent state of a library: the catalog, image files and vector indexes."""
