"""Stage 1: read."""
