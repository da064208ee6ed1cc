"""One router per stage."""
