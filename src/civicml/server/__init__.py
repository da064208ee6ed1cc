"""civicml stage."""
