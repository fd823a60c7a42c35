"""The app's FastAPI server: the page and the HTTP API over one loaded model.

    >>> from dcgd.app.server import create_app
    >>> from dcgd.sampling.pipeline import load_pipeline
    >>> app = create_app(load_pipeline("models/quickstart"))   # then: uvicorn.run(app)

Routes: ``GET /`` (the page), ``POST /api/remove``, ``POST /api/describe``, ``GET /api/model``,
``GET /api/health``, ``GET /api/progress/{job}``, ``GET /docs`` (API page, offline) and
``GET /openapi.json``. Removals and descriptions run one at a time in arrival order
(:mod:`dcgd.app.queue`); every refusal is a 4xx
(or 503 when the queue is full) with ``{"detail": "<one sentence>"}``.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dcgd.app import docs
from dcgd.app.queue import ModelQueue, QueueFull
from dcgd.app.uploads import (
    DILATE_RANGE,
    MAX_STEPS,
    SEED_RANGE,
    W_RANGE,
    UploadError,
    check_same_size,
    decode_image,
    decode_mask,
    encode_png,
    filled,
    key_of,
    parse_options,
    peek,
)
from dcgd.components.schedulers import SAMPLERS
from dcgd.describe.base import Describer
from dcgd.errors import DCGDError
from dcgd.method.guidance import PROMPT_MODES, needed_descriptions
from dcgd.sampling.pipeline import DCGDPipeline
from dcgd.sampling.remover import Remover

# The page may load nothing from anywhere else, and send nothing anywhere else: the browser
# enforces it (no CDN, no telemetry, works offline).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self' blob:; form-action 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class Limits:
    """What one request may send and how many may wait for the model."""

    max_bytes: int = 32 * 2**20  # the whole multipart body: image + mask + fields
    max_pixels: int = 40_000_000  # per image: ~ a 7700x5200 photo, 160 MB as RGBA
    max_waiting: int = 32  # requests queued behind the running one; more get 503


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class UploadGuard:
    """ASGI middleware for POSTs: refuse a body over ``max_bytes`` before it is read (the
    declared Content-Length is what the HTTP server reads, no more), a body of unknown length
    (chunked), and a POST sent by another site's page (its Origin is not this server)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            refusal = self._check(dict(scope["headers"]))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        origin = headers.get(b"origin", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        # A page of any site can POST a form to 127.0.0.1; browsers say whose page it was.
        if origin and origin != "null" and urlsplit(origin).netloc != host:
            return _refuse(403, f"requests from pages of other sites ({origin}) are refused")
        length = headers.get(b"content-length")
        if length is None:
            return _refuse(411, "send the upload with a Content-Length (not chunked)")
        try:
            size = int(length)
        except ValueError:
            return _refuse(400, "the Content-Length header is not a number")
        if size > self.max_bytes:
            return _refuse(
                413,
                f"the upload is {size / 2**20:.1f} MB; this server takes at most "
                f"{self.max_bytes / 2**20:.1f} MB per request (--max-upload-mb)",
            )
        return None


def _one_sentence(err: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one sentence about the first."""
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "the request"
    if where in ("image", "mask") and first.get("type") == "missing":
        return f"send the {where} as the multipart file field {where!r}"
    if where in ("image", "mask"):  # sent as a text field: curl -F image=photo.png (no @)
        return f"send the {where} as a file upload (with curl: -F {where}=@file.png)"
    return f"{where}: {first.get('msg', 'invalid')}"


def _header(text: str) -> str:
    """Any text as an HTTP header value (headers are latin-1): percent-encoded UTF-8."""
    return quote(text, safe=" ,.;:!?'()/-_")


# What /api/remove and /api/describe both take and both answer when refusing (one place, so
# the two routes and their /docs entries cannot drift apart).
ImageUpload = Annotated[UploadFile, File(description="the photo (PNG, JPEG, WebP, BMP, TIFF)")]
MaskUpload = Annotated[
    UploadFile, File(description="the mask, same size: white (brighter than half) = remove")
]
PromptModeField = Annotated[str | None, Form(description="none, positive, negative or dual")]
DilateField = Annotated[str | None, Form(description="grow the mask by N pixels first")]
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "a bad upload or option, said in one sentence"},
    403: {"description": "sent by a page of another site"},
    411: {"description": "no Content-Length (a chunked upload)"},
    413: {"description": "the upload or an image is over the server's limit"},
    422: {"description": "a file is missing, or sent as text"},
    503: {"description": "too many requests wait already; try again later"},
}


def create_app(
    pipeline: DCGDPipeline,
    *,
    model_name: str = "model",
    describer: Describer | None = None,
    limits: Limits = Limits(),
) -> FastAPI:
    """The page and the API over ``pipeline`` (already on its device), served as one app.

    ``describer`` describes the window when a request leaves ``t_info`` / ``t_mask`` empty
    (as ``remove --describer``); without one they are "".
    """
    queue = ModelQueue(pipeline.unet, limits.max_waiting)
    settings = pipeline.settings
    train_timesteps = int(pipeline.train_schedule.config.num_train_timesteps)
    page = files("dcgd.app").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(
        title="dcgd",
        description="Remove objects from photos with a Dual-CLIP Guided Diffusion model: "
        "send an image and a mask (white = remove), get the PNG back.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; /docs is served by docs.render
        redoc_url=None,
    )
    app.add_middleware(UploadGuard, max_bytes=limits.max_bytes)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, err: UploadError) -> JSONResponse:
        return _refuse(err.status, err.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _refuse(422, _one_sentence(err))

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/docs", include_in_schema=False)
    async def api_page() -> HTMLResponse:
        return HTMLResponse(
            docs.render(app.openapi()),
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    @app.get("/api/health", summary="Is the server up, and how busy")
    async def health() -> dict[str, Any]:
        """`status` is always `ok` when it answers; `running` whether a removal runs now,
        `waiting` how many wait behind it."""
        return {"status": "ok", "running": queue.busy, "waiting": queue.waiting}

    @app.get("/api/model", summary="The model's settings and the defaults of every option")
    async def model() -> dict[str, Any]:
        """What `POST /api/remove` uses for each option left out, the choices and ranges
        it accepts, which descriptions each prompt mode reads, and the upload limits."""
        return {
            "model": model_name,
            "settings": asdict(settings),
            "defaults": {
                "prompt_mode": settings.prompt_mode,
                "w": settings.w,
                "steps": settings.steps,
                "seed": settings.seed,
                "sampler": settings.sampler,
                "dilate": 0,
                "t_info": "",
                "t_mask": "",
            },
            "choices": {"prompt_mode": list(PROMPT_MODES), "sampler": sorted(SAMPLERS)},
            "ranges": {
                "w": list(W_RANGE),
                "steps": [1, min(MAX_STEPS, train_timesteps)],
                "seed": list(SEED_RANGE),
                "dilate": list(DILATE_RANGE),
            },
            "needs": {mode: list(needed_descriptions(mode)) for mode in PROMPT_MODES},
            "describer": type(describer).__name__ if describer is not None else None,
            "limits": asdict(limits),
        }

    @app.get("/api/progress/{job}", summary="Where a removal is: waiting, running, or unknown")
    async def progress(job: str) -> dict[str, Any]:
        """For the `job` id a `POST /api/remove` was sent with: `waiting` (`ahead`:
        requests before it), `running` (`step` of `steps`, `elapsed` seconds) or
        `unknown` (finished, or never sent)."""
        return queue.progress(job)

    @app.post(
        "/api/describe",
        summary="What the describer says the scene and the masked object are",
        responses={
            **UPLOAD_ERRORS,
        },
    )
    def describe(  # a plain def, as remove: waiting for the model blocks no one
        image: ImageUpload,
        mask: MaskUpload,
        prompt_mode: PromptModeField = None,
        dilate: DilateField = None,
    ) -> dict[str, Any]:
        """The `t_info` and `t_mask` a `POST /api/remove` with the same image, mask,
        `prompt_mode` and `dilate` uses when they are left empty: the configured describer's
        (CLIP) descriptions of the window the model sees, for those the prompt mode reads;
        "" for the others. Without a describer both are "" and `describer` is null. Checked
        as `POST /api/remove` checks its upload; served in the same queue (CLIP runs on the
        model's device)."""
        options = parse_options({"prompt_mode": prompt_mode, "dilate": dilate}, train_timesteps)
        image_bytes, mask_bytes = image.file.read(), mask.file.read()
        check_same_size(
            peek(image_bytes, "image", limits.max_pixels),
            peek(mask_bytes, "mask", limits.max_pixels),
        )
        try:
            remover = Remover(
                pipeline, dilate=options.dilate, describer=describer, sampling=options.sampling
            )
        except DCGDError as err:
            raise UploadError(400, str(err)) from None
        key = key_of(image.filename)

        def work() -> tuple[str, str]:
            rgb, _ = decode_image(image_bytes)
            hole = decode_mask(mask_bytes)
            try:
                return remover.describe(rgb, hole, key=key)
            except DCGDError as err:  # e.g. a dilated mask that covers the whole image
                raise UploadError(400, str(err)) from None

        if describer is None:  # nothing runs on the model: checked here, not queued
            t_info, t_mask = work()
        else:
            try:
                t_info, t_mask = queue.run(uuid.uuid4().hex, 0, work)
            except QueueFull as err:
                raise UploadError(
                    503, f"the server is busy ({err}); try again in a moment"
                ) from None
        name = type(describer).__name__ if describer is not None else None
        return {"t_info": t_info, "t_mask": t_mask, "describer": name}

    @app.post(
        "/api/remove",
        summary="Remove the masked objects from an image",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "the result, a PNG"},
            **UPLOAD_ERRORS,
        },
    )
    def remove(  # a plain def: FastAPI runs it in a worker thread, so waiting blocks no one
        image: ImageUpload,
        mask: MaskUpload,
        prompt_mode: PromptModeField = None,
        w: Annotated[str | None, Form(description="guidance weight of eq. 6")] = None,
        steps: Annotated[str | None, Form(description="sampling steps")] = None,
        seed: Annotated[str | None, Form(description="seed (with the file name)")] = None,
        sampler: Annotated[str | None, Form(description="ddim, ddpm, dpmsolver++ or euler")] = None,
        dilate: DilateField = None,
        t_info: Annotated[str | None, Form(description="T_info: what the scene is")] = None,
        t_mask: Annotated[str | None, Form(description="T_mask: the object to remove")] = None,
        job: Annotated[
            str | None, Form(description="an id to follow at /api/progress/{job}")
        ] = None,
    ) -> Response:
        """Fill the white part of `mask` in `image`; every other pixel is returned exactly
        as uploaded (8-bit RGB, or RGBA with the upload's alpha untouched). Options left out
        take the model's defaults (`GET /api/model`). The result is seeded by `seed` and
        the image's file name, as `python -m dcgd remove` seeds it, so the same settings
        give the same result. The headers `X-DCGD-T-Info` / `X-DCGD-T-Mask` carry the
        descriptions used (percent-encoded)."""
        fields = dict(prompt_mode=prompt_mode, w=w, steps=steps, seed=seed, sampler=sampler)
        fields.update(dilate=dilate, t_info=t_info, t_mask=t_mask, job=job)
        options = parse_options(fields, train_timesteps)
        image_bytes, mask_bytes = image.file.read(), mask.file.read()
        seen = peek(image_bytes, "image", limits.max_pixels)
        check_same_size(seen, peek(mask_bytes, "mask", limits.max_pixels))
        try:  # checks the settings against the model now, before the request waits
            remover = Remover(
                pipeline,
                dilate=options.dilate,
                t_info=options.t_info,
                t_mask=options.t_mask,
                describer=describer,
                sampling=options.sampling,
            )
        except DCGDError as err:
            raise UploadError(400, str(err)) from None
        key = key_of(image.filename)

        def work() -> tuple[bytes, dict[str, str]]:
            # Decoded in the job's turn: one decoded image in memory however many wait.
            rgb, rgba = decode_image(image_bytes)
            hole = decode_mask(mask_bytes)
            try:
                result = remover(rgb, hole, key=key)
            except DCGDError as err:  # e.g. a dilated mask that covers the whole image
                raise UploadError(400, str(err)) from None
            headers = {
                "X-DCGD-T-Info": _header(result.t_info),
                "X-DCGD-T-Mask": _header(result.t_mask),
                "X-DCGD-Key": _header(key),
            }
            pixels = filled(result.image, rgba, result.mask)
            return encode_png(pixels, seen.icc_profile), headers

        steps_total = options.sampling.get("steps", settings.steps)
        try:
            png, headers = queue.run(options.job or uuid.uuid4().hex, steps_total, work)
        except QueueFull as err:
            raise UploadError(503, f"the server is busy ({err}); try again in a moment") from None
        headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(key)}-removed.png"
        return Response(png, media_type="image/png", headers=headers)

    return app
