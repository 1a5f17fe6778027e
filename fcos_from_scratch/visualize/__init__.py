"""Pictures that explain what a detector does (PNG files, matplotlib Agg)."""
