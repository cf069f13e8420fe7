"""Per-row and per-batch functions that Ray Data maps over episodes (wired in ``pipeline.relabel``)."""
