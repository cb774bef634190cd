"""API routes: incidents."""

from fastapi import APIRouter

router = APIRouter()
