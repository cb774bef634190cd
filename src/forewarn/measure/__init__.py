"""forewarn.measure."""
