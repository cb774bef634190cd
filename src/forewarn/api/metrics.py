"""API routes: metrics."""

from fastapi import APIRouter

router = APIRouter()
