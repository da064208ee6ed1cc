"""civicml."""
