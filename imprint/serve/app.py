"""The HTTP service: predict images, list, teach and remove classes, health and Prometheus metrics, and the page
at ``/`` that does it all from a browser. FastAPI for typed endpoints and the OpenAPI page (``/docs``), on any
ASGI server (``imprint serve`` runs uvicorn); ``create_app`` gives the app to mount in one's own."""
from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Union

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from imprint.errors import UserError
from imprint.predictions import predictions
from imprint.serve.batching import Batcher
from imprint.serve.live import ClassChangeError, LiveClassifier, Version
from imprint.serve.uploads import BadRequest, Limits, preprocessed, read_images

Label = Union[str, int, float, bool]  # noqa: UP007 (pydantic reads the annotation at run time)
MAX_NAME = 100  # characters of a class name


@dataclass
class ServeOptions:
    """What the service allows: class changes (off with `read_only`), a bearer `token` they need when set, and
    what one request may carry."""

    read_only: bool = False
    token: str | None = None
    limits: Limits = field(default_factory=Limits)
    workers: int = 2  # batches in progress at once


class Alternative(BaseModel):
    label: Label
    score: float


class ImagePrediction(BaseModel):
    label: Label
    score: float
    top: list[Alternative]
    unknown_score: float | None = None
    accepted: bool | None = None
    threshold: float | None = None


class Predictions(BaseModel):
    predictions: list[ImagePrediction]
    version: int


class ClassInfo(BaseModel):
    name: Label
    count: int | None  # examples taught by example; None for a class imprinted by fit (its support is not kept)
    proxies: int


class Classes(BaseModel):
    classes: list[ClassInfo]
    version: int
    can_remove: bool
    read_only: bool


class Change(BaseModel):
    version: int
    classes: list[ClassInfo]


class Health(BaseModel):
    status: str
    version: int
    classes: int
    encoder: str
    runtime: str  # what runs the encoder: "torch", "onnxruntime 1.20.1", "openvino 2026.4.1"


class Problem(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413,
                                                                                  415, 422)}
IMAGES_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}}}}}}}}


class Metrics:
    """Prometheus metrics of one app (its own registry, so two apps in a process do not mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("imprint_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.errors = Counter("imprint_errors", "requests answered with a 4xx or 5xx status", ["route", "status"],
                              registry=self.registry)
        self.latency = Histogram("imprint_request_seconds", "time to answer a request", ["route"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("imprint_encoder_batch_images", "images encoded together (dynamic batching)",
                               registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.images = Counter("imprint_images", "images encoded, by purpose", ["purpose"], registry=self.registry)
        self.version = Gauge("imprint_classifier_version", "the served classifier's version",
                             registry=self.registry)
        self.classes = Gauge("imprint_classes", "classes the served classifier knows", registry=self.registry)

    def served(self, version: Version) -> None:
        self.version.set(version.number)
        self.classes.set(len(version.classifier.classes_))


class Measured:
    """ASGI middleware: counts and times every request by route and status, and refuses a body larger than the
    limit: before it is read when its length is declared, as soon as it passes the limit when it comes in chunks
    (a plain ASGI layer: Starlette's BaseHTTPMiddleware costs a task per request)."""

    def __init__(self, app: Any, metrics: Metrics, max_bytes: int) -> None:
        self.app, self.metrics, self.max_bytes = app, metrics, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        declared = dict(scope["headers"]).get(b"content-length", b"")
        start = time.perf_counter()
        if declared.isdigit() and int(declared) > self.max_bytes:
            status = 413
            await _problem(413, f"the request has {int(declared)} bytes; at most {self.max_bytes} (send fewer or "
                                "smaller images)")(scope, receive, send)
        else:
            received = 0

            async def receiving() -> dict:  # a body sent in chunks, with no length declared, is counted as it comes
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BadRequest(413, f"the request is larger than {self.max_bytes} bytes (send fewer or smaller "
                                          "images)")
                return message

            async def sending(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)
            await self.app(scope, receiving, sending)
        route = getattr(scope.get("route"), "path", "unmatched")  # the template (/classes/{name}): few series
        self.metrics.latency.labels(route).observe(time.perf_counter() - start)
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        if status >= 400:
            self.metrics.errors.labels(route, str(status)).inc()


def create_app(live: LiveClassifier, options: ServeOptions | None = None) -> FastAPI:
    """The service for `live` (a classifier and its encoder); mount it in an ASGI app or run it with uvicorn."""
    options = options or ServeOptions()
    limits = options.limits
    metrics = Metrics()
    metrics.served(live.version)
    encoder = live.encoder
    batcher = Batcher(lambda jobs: _encoded_and_scored(live, jobs), workers=options.workers,
                      on_batch=metrics.batch.observe)
    app = FastAPI(title="imprint", version=_version(), summary="Classify images and teach new classes by example, "
                  "with no training step.", lifespan=_closing(batcher))
    app.state.live, app.state.metrics = live, metrics

    app.add_middleware(Measured, metrics=metrics, max_bytes=limits.max_request_bytes)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _problem(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _problem(422, f"{where}: {first.get('msg', 'invalid')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail))

    async def done_by_batch(request: Request, top_k: int | None) -> list[Any]:
        """Each image of the request encoded (and, with `top_k`, predicted) together with those of other
        requests: embeddings, or (version, prediction) pairs."""
        images = await read_images(request, limits)
        pixels = await run_in_threadpool(preprocessed, images, encoder.transform)
        results = await asyncio.wrap_future(batcher.submit([(row, top_k) for row in pixels]))
        metrics.images.labels("predict" if top_k else "teach").inc(len(images))
        return results

    def allowed(request: Request) -> None:
        if options.read_only:
            raise BadRequest(403, "this server is read-only (started with --read-only): classes cannot be changed")
        if options.token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {options.token}".encode()):
                raise BadRequest(401, "changing classes needs the server's token: send the header "
                                      "'Authorization: Bearer <token>'")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("imprint.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health", response_model=Health)
    def health() -> Health:
        version = live.version
        return Health(status="ok", version=version.number, classes=len(version.classifier.classes_),
                      encoder=encoder.id, runtime=encoder.runtime_id)

    @app.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict", response_model=Predictions, responses=ERRORS, openapi_extra=IMAGES_BODY)
    async def predict(request: Request, top_k: int = Query(3, ge=1, le=1000, description="alternatives per "
                                                                                           "image")) -> Predictions:
        """Classify one or many images: each one's class, its probability and the top alternatives (with the
        unknown score, the threshold and whether it was accepted, for a classifier that rejects)."""
        found = await done_by_batch(request, top_k)
        return Predictions(version=found[0][0], predictions=[_prediction(p, top_k) for _, p in found])

    @app.get("/classes", response_model=Classes)
    def classes() -> Classes:
        version = live.version
        return Classes(classes=version.classes(), version=version.number, can_remove=_can_remove(version),
                       read_only=options.read_only)

    @app.post("/classes/{name}/examples", response_model=Change, responses=ERRORS, openapi_extra=IMAGES_BODY)
    async def teach(request: Request, name: str) -> Change:
        """Add example images to a class: a new class, or one taught by example before (imprinted again from
        all its examples). No training: the class is used by the very next prediction."""
        allowed(request)
        _check_name(name)
        embeddings = np.stack(await done_by_batch(request, None))
        version = await run_in_threadpool(_changed, live.teach, name, embeddings)
        metrics.served(version)
        return Change(version=version.number, classes=version.classes())

    @app.delete("/classes/{name}", response_model=Change, responses=ERRORS)
    async def forget(request: Request, name: str) -> Change:
        """Remove a class."""
        allowed(request)
        version = await run_in_threadpool(_changed, live.forget, name)
        metrics.served(version)
        return Change(version=version.number, classes=version.classes())

    return app


def _encoded_and_scored(live: LiveClassifier, jobs: list[tuple[Any, int | None]]) -> list[Any]:
    """The batcher's work: every image encoded in one pass, and those to predict scored in one pass by one
    version of the classifier (a version never changes within a batch, so neither within a request)."""
    embeddings = live.encoder.encode_batch(torch.stack([pixels for pixels, _ in jobs]))
    wanted = [i for i, (_, top_k) in enumerate(jobs) if top_k]
    out: list[Any] = list(embeddings)
    if wanted:
        version = live.version
        top_k = max(jobs[i][1] for i in wanted)
        found = predictions(version.classifier, [""] * len(wanted), embeddings[wanted], top_k)
        for i, prediction in zip(wanted, found):
            out[i] = (version.number, prediction)
    return out


def _changed(change: Any, *args: Any) -> Version:
    """Run a class change, its refusals as HTTP problems."""
    try:
        return change(*args)
    except LookupError as exc:
        raise BadRequest(404, exc.args[0] if exc.args else "no such class") from None
    except ClassChangeError as exc:
        raise BadRequest(409, str(exc)) from None
    except UserError as exc:
        raise BadRequest(422, str(exc)) from None


def _check_name(name: str) -> None:
    if not name.strip() or len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name) or \
            name != name.strip():
        raise BadRequest(422, f"a class name is 1 to {MAX_NAME} printable characters, without leading or trailing "
                              "spaces")


def _can_remove(version: Version) -> bool:
    """Whether the head can forget a class exactly (GDA and ridge pool statistics over all classes: they cannot)."""
    return version.classifier.pipeline_.metric.forgets_classes and len(version.classifier.classes_) > 2


def _prediction(found: Any, top_k: int) -> ImagePrediction:
    rejects = found.unknown_score is not None
    return ImagePrediction(label=_plain(found.label), score=found.probability,
                           top=[Alternative(label=_plain(label), score=score) for label, score in found.top[:top_k]],
                           unknown_score=found.unknown_score, threshold=found.threshold,
                           accepted=(not found.rejected) if rejects else None)


def _plain(label: Any) -> Any:
    return label.item() if hasattr(label, "item") else label


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _closing(batcher: Batcher) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        batcher.close()
    return lifespan


def _version() -> str:
    from imprint import __version__

    return __version__
