"""Operations that combine the parts below with docker's rules, one module per concern;
``health`` holds fsck (check and repair) and housekeeping (system df, prune)."""
