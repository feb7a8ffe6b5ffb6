"""The explorer's web app: one static page and a small JSON API over the runs under one folder.

    GET  /                               the page (self-contained: no CDN, no network)
    GET  /api/runs                       the runs this server offers, by id
    GET  /api/runs/{run}                 groups, conditions, test faces of a run
    GET  /api/runs/{run}/dims?group=G    the sliders: the group's dimensions as `facevae dims` names them
    POST /api/runs/{run}/face            a face's own values on those sliders and its own condition
    POST /api/runs/{run}/decode          the face with values, conditions and a morph applied: PNG or WebP
    POST /api/runs/{run}/original        the face's original image (a test face, an uploaded photo)
    POST /api/uploads                    a photo (multipart "file"): aligned like CelebA, kept in memory

Every error is JSON ``{"detail": "..."}``: 404 for what the server does not hold, 409 for a run it
cannot open, 413 past the upload cap, 422 for anything malformed or out of range. Endpoints that
compute are plain functions, so they run in the server's thread pool and never block its event loop.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations at run time, and the
# run-id type is made per app (an enum of its runs), so it must be an object, not a name to look up.
import io
import threading
import time
from enum import Enum
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image

from facevae import __version__
from facevae.common.errors import RunError
from facevae.data.align import DEFAULT_MAX_PIXELS, PictureError
from facevae.serving.catalog import RunCatalog, find_runs
from facevae.serving.explorer import Explorer, Missing, QueryError, Uploads
from facevae.serving.schemas import (
    NAME_LENGTH,
    DecodeQuery,
    FaceQuery,
    FaceSummary,
    OriginalQuery,
    Problem,
    RunInfo,
    RunList,
    Sliders,
    Upload,
)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
IMAGE_TYPES = {"png": "image/png", "webp": "image/webp"}
PROBLEMS = {404: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}}
IMAGE_RESPONSES = {200: {"content": {t: {} for t in IMAGE_TYPES.values()}, "description": "the face"}, **PROBLEMS}


class BodyLimit:
    """An ASGI wrapper answering 413 to a request body past ``limit`` bytes, declared or streamed, before any
    parser holds it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # FastAPI passes its own HTTPException through its body parsing
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"the request is larger than the {self.limit / 2**20:.3g} MiB this server accepts"


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "webp":
        Image.fromarray(image).save(buffer, format="WEBP", lossless=True, method=0)
    else:
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)  # 64×64: size hardly differs, time does
    return buffer.getvalue()


def image_response(image: np.ndarray, fmt: str, started: float) -> Response:
    headers = {"Cache-Control": "no-store", "X-Decode-Ms": f"{(time.perf_counter() - started) * 1e3:.1f}"}
    return Response(encoded(image, fmt), media_type=IMAGE_TYPES[fmt], headers=headers)


def problem(status: int):
    return lambda request, exc: JSONResponse({"detail": str(exc)}, status_code=status)


def validation_message(error: dict) -> str:
    where = [str(p) for p in error.get("loc", ()) if p != "body"]
    if error.get("type") == "json_invalid":  # its loc ends with the character the JSON breaks at, not a field
        reason = (error.get("ctx") or {}).get("error", "cannot be parsed")
        return f"body: not valid JSON ({reason}" + (f" at character {where[-1]})" if where else ")")
    return f"{'.'.join(where) or 'body'}: {error.get('msg', 'invalid')}"


def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    # one line, like the command line's errors; never the input echoed back (it may be binary)
    parts = [validation_message(e) for e in exc.errors()[:5]]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(QueryError, problem(422))
    app.add_exception_handler(PictureError, problem(422))
    app.add_exception_handler(Missing, problem(404))
    app.add_exception_handler(RunError, problem(409))
    app.add_exception_handler(RequestValidationError, validation_problem)


def page_html() -> str:
    return resources.files("facevae.serving").joinpath("static/explorer.html").read_text(encoding="utf-8")


def add_run_routes(app: FastAPI, catalog: RunCatalog) -> None:
    RunId = Enum("RunId", {run_id: run_id for run_id in catalog.ids()}, type=str)  # the schema lists the ids
    group_query = Query(None, min_length=1, max_length=NAME_LENGTH, description="default: the top group")

    def explorer(run_id: RunId) -> Explorer:
        return catalog.explorer(run_id.value)

    @app.get("/api/runs", response_model=RunList)
    def runs():
        return {"runs": [{"id": e.id, "path": e.relative, "model": e.model, "image_size": e.image_size}
                         for e in catalog.entries.values()]}

    @app.get("/api/runs/{run_id}", response_model=RunInfo, responses=PROBLEMS)
    def run_info(run_id: RunId):
        return explorer(run_id).info()

    @app.get("/api/runs/{run_id}/dims", response_model=Sliders, responses=PROBLEMS)
    def dims(run_id: RunId, group: str | None = group_query):
        return explorer(run_id).sliders(group)

    @app.post("/api/runs/{run_id}/face", response_model=FaceSummary, responses=PROBLEMS)
    def face(run_id: RunId, query: FaceQuery):
        return explorer(run_id).summary(query.face, query.group)

    @app.post("/api/runs/{run_id}/decode", response_class=Response, responses=IMAGE_RESPONSES)
    def decode(run_id: RunId, query: DecodeQuery):
        started = time.perf_counter()
        return image_response(explorer(run_id).render(query), query.format, started)

    @app.post("/api/runs/{run_id}/original", response_class=Response, responses=IMAGE_RESPONSES)
    def original(run_id: RunId, query: OriginalQuery):
        started = time.perf_counter()
        return image_response(explorer(run_id).original(query.face), "png", started)


def add_upload_route(app: FastAPI, uploads: Uploads) -> None:
    @app.post("/api/uploads", response_model=Upload, responses=PROBLEMS)
    def upload(file: UploadFile = File(..., description="a photo: JPEG, PNG, WebP, ...")):
        upload_id, framed, (width, height) = uploads.add(file.file.read())
        found = framed.detection
        note = (f"face found (probability {found.probability:.3f}), aligned to CelebA's five-point template"
                if found is not None else f"{framed.why_not}: centre crop")
        return {"face": {"kind": "upload", "id": upload_id}, "face_found": framed.detection is not None,
                "alignment": note, "width": width, "height": height}


def create_app(root: str | Path, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> FastAPI:
    """The explorer over the finished runs at or under ``root`` (a RunError when there is none)."""
    entries, skipped = find_runs(root)
    compute = threading.RLock()
    uploads = Uploads(compute, max_pixels)
    catalog = RunCatalog(entries, lambda entry, run: Explorer(entry, run, uploads, compute))
    app = FastAPI(title="facevae explorer", version=__version__, docs_url=None, redoc_url=None)
    app.state.catalog, app.state.uploads, app.state.skipped = catalog, uploads, skipped
    page = page_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    add_run_routes(app, catalog)
    add_upload_route(app, uploads)
    add_error_handlers(app)
    app.add_middleware(BodyLimit, limit=max_upload_bytes)
    return app
