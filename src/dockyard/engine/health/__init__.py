"""Health of a store: fsck (check and repair) and housekeeping (system df, prune)."""
