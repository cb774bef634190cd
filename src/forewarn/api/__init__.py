"""The REST API (FastAPI), served by ``forewarn serve``."""
