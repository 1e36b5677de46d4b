"""Stage 5: vectorize."""
