"""forewarn.deliver.channels."""
