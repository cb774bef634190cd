"""The API documentation (``/docs``, Swagger UI) served from the installed package, so it works offline.

FastAPI's default page loads Swagger UI's scripts from a CDN: without internet it is blank. The same files ship
in the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1; Apache-2.0 licence in its
dist-info), served here under ``/docs/assets/``.

>>> sorted(ASSETS)[:2]
['favicon-32x32.png', 'swagger-ui-bundle.js']
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from forewarn.api.auth import PUBLIC

router = APIRouter(include_in_schema=False, dependencies=[PUBLIC])  # as the schema it shows: public

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@router.get("/docs", response_class=HTMLResponse)
def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="forewarn API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


@router.get("/docs/assets/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no documentation asset {name!r}")
    return FileResponse(
        str(swagger_ui_path / name),
        media_type=ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )
