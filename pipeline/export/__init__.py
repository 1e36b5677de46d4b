"""Stage 6: export."""
