"""forewarn.deliver."""
