"""API routes: alertmanager."""

from fastapi import APIRouter

router = APIRouter()
