"""forewarn.sim."""
