"""forewarn.decide."""
