"""forewarn.detect."""
