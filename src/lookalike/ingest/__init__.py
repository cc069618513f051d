"""Getting photos in: where they come from, fetching them, and the indexing pipeline."""
