"""The ``civicml`` command line."""
