"""The web page at ``/``: plain HTML, CSS and a script in this folder, served by the REST API's app.

No build step and nothing from a CDN: the files here are the page (package data, so an installed wheel has
them). The page itself needs no token (it holds no data); its script calls the API with the token a person
gives it. A Content-Security-Policy keeps it to its own origin: no inline script, no other host.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

FOLDER = Path(__file__).parent
ASSETS = {"page.css": "text/css", "page.js": "text/javascript", "icon.svg": "image/svg+xml"}
"""The files ``/page/NAME`` serves: named, so nothing else in this folder (its Python) is ever served."""

# blob: for thumbnails, which the script fetches with the token and shows as object URLs.
POLICY = (
    "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # an upgraded server's page is loaded at once (revalidated, not stale)
}


def mount(app: FastAPI) -> None:
    """``GET /`` (the page) and ``/page/*`` (its stylesheet, script and icon), outside the token's guard."""

    @app.get("/", include_in_schema=False, response_class=FileResponse)
    def page() -> FileResponse:
        return FileResponse(FOLDER / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)

    @app.get("/page/{name}", include_in_schema=False, response_class=FileResponse)
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no page file {name[:80]!r}")
        return FileResponse(FOLDER / name, media_type=f"{ASSETS[name]}; charset=utf-8", headers=HEADERS)


__all__ = ["mount"]
