"""Stage 4: stitch."""
