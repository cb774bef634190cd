"""forewarn.incidents."""
