"""forewarn.signals."""
