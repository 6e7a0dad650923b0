"""Pipeline assets: per-stream raw/validated (one factory), merged_depth, and what derives from it."""
