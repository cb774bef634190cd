"""API routes: signals."""

from fastapi import APIRouter

router = APIRouter()
