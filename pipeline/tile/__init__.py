"""Stage 2: tile."""
