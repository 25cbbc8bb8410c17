"""``/docs`` (Swagger UI) and ``/redoc`` with their assets served by the service itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: a blank page on a machine without
internet. The assets come from an installed package instead, ``fastapi-offline`` (MIT; it ships
swagger-ui-dist 5 and ReDoc 2's standalone bundle), mounted at ``/docs/assets``; nothing on
either page names another host (no Google fonts, no online validator badge, no remote favicon).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(str(files(fastapi_offline) / "static"))
ASSETS_URL = "/docs/assets"
SWAGGER_PARAMETERS = {
    "validatorUrl": None,  # Swagger UI would fetch a badge from validator.swagger.io
    "persistAuthorization": True,  # the API key typed into "Authorize" survives a reload
    "displayRequestDuration": True,
    "defaultModelsExpandDepth": 0,
}
# Only this origin: the pages' inline bootstrap and styles, data: images (Swagger's icons), blob:
# workers (ReDoc's search). ReDoc 2 also shows Redocly's logo from cdn.redoc.ly, unconditionally
# (it hides the image when it fails): the policy keeps the browser from asking for it at all.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:")


def install(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets to an app built with ``docs_url=None`` and
    ``redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page
