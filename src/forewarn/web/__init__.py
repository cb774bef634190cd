"""forewarn.web."""
