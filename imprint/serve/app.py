"""The HTTP service: predict images, list, teach and remove classes, health and Prometheus metrics, and the page
at ``/`` that does it all from a browser. FastAPI for typed endpoints and the OpenAPI page (``/docs``), on any
ASGI server (``imprint serve`` runs uvicorn); ``create_app`` gives the app to mount in one's own."""
from __future__ import annotations

import asyncio
import base64
import errno
import hmac
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Union
from urllib.parse import urlsplit

import anyio
import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from imprint.core.atomic import WriteError
from imprint.core.errors import UserError
from imprint.serve.admission import ImageQueue, Limits, MemoryBudget, Overloaded
from imprint.serve.batching import Batcher
from imprint.serve.live import ClassChangeError, LiveClassifier, Version
from imprint.serve.uploads import BadRequest, preprocessed, read_images
from imprint.workflows.predict import predictions

Label = Union[str, int, float, bool]  # noqa: UP007 (pydantic reads the annotation at run time)
MAX_NAME = 100  # characters of a class name
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC = resources.files("imprint.serve").joinpath("static")


@dataclass
class ServeOptions:
    """What the service allows: class changes (off with `read_only`), a bearer `token` they need when set, what
    one request may carry and the server holds at once (`limits`), the host names it answers to (`allowed_hosts`,
    "*" for any: a guard against DNS rebinding) and the origins other than its own whose pages may send it
    requests that are not reads (`allowed_origins`: a guard against cross-site requests)."""

    read_only: bool = False
    token: str | None = None
    limits: Limits = field(default_factory=Limits)
    workers: int = 2  # batches in progress at once
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    allowed_origins: tuple[str, ...] = ()


class Alternative(BaseModel):
    label: Label
    probability: float


class ImagePrediction(BaseModel):
    label: Label
    probability: float
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


class Examples(BaseModel):
    name: Label
    count: int | None
    thumbnails: list[str]  # data: URLs of small JPEGs of the images a class was taught with through the service


class Health(BaseModel):
    status: str
    version: int
    classes: int
    encoder: str
    runtime: str  # what runs the encoder: "torch", "onnxruntime 1.20.1", "openvino 2026.4.1"


class Problem(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413,
                                                                                  415, 422, 503, 507)}
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
    """ASGI middleware: counts and times every request by route and status; refuses a body larger than the limit
    (before it is read when its length is declared, as soon as it passes the limit when it comes in chunks), and a
    body the memory budget cannot hold now (503). A plain ASGI layer: Starlette's BaseHTTPMiddleware costs a task
    per request."""

    def __init__(self, app: Any, metrics: Metrics, limits: Limits, budget: MemoryBudget) -> None:
        self.app, self.metrics, self.limits, self.budget = app, metrics, limits, budget

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        max_bytes = self.limits.max_request_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        length = int(declared) if declared.isdigit() else None
        start = time.perf_counter()
        holds = 0 if scope["method"] in SAFE_METHODS or length == 0 else self.limits.body_bytes(length)

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if length is not None and length > max_bytes:
            await _problem(413, f"the request has {length} bytes; at most {max_bytes} (send fewer or smaller "
                                "images)")(scope, receive, sending)
        elif holds and not self.budget.reserve(holds):
            await _busy(Overloaded("the server is busy: requests in progress hold its memory budget or wait for "
                                   "it; retry shortly", 1))(scope, receive, sending)
        else:
            received = 0

            async def receiving() -> dict:  # a body sent in chunks, with no length declared, is counted as it comes
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BadRequest(413, f"the request is larger than {max_bytes} bytes (send fewer or smaller "
                                          "images)")
                return message

            try:
                await self.app(scope, receiving, sending)
            finally:
                if holds:
                    self.budget.release(holds)
        route = getattr(scope.get("route"), "path", "unmatched")  # the template (/classes/{name}): few series
        self.metrics.latency.labels(route).observe(time.perf_counter() - start)
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        if status >= 400:
            self.metrics.errors.labels(route, str(status)).inc()


class Guarded:
    """ASGI middleware: answers only requests addressed to an expected host name (a page whose DNS name is turned to
    this machine's address, "DNS rebinding", sends its own name), and refuses requests that are not reads from
    pages of other origins (a page anywhere on the web could otherwise teach or remove classes, or spend the
    encoder, on a server on the user's machine)."""

    def __init__(self, app: Any, hosts: tuple[str, ...], origins: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in hosts
        self.hosts = {host.lower().strip("[]") for host in hosts}
        self.origins = {_origin(origin) for origin in origins}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.any_host and _origin(f"http://{host}")[1] not in self.hosts:
            await _problem(400, f"this server does not answer to the host name {host[:80]!r}; start it with "
                                "--allow-host NAME to add a name it is reached by")(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get(b"origin")
            scheme = scope.get("scheme", "http")
            if origin is not None:
                sender = _origin(origin.decode("latin-1"))
                if sender != _origin(f"{scheme}://{host}") and sender not in self.origins:
                    await _problem(403, f"refused a {scope['method']} request from a page of another origin "
                                        f"({origin.decode('latin-1')[:80]}); start the server with --allow-origin "
                                        "ORIGIN to accept that page's requests")(scope, receive, send)
                    return
            elif headers.get(b"sec-fetch-site") == b"cross-site":
                await _problem(403, f"refused a cross-site {scope['method']} request; start the server with "
                                    "--allow-origin ORIGIN to accept that page's requests")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an origin or a URL, the port filled in for http and https: how browsers compare
    origins; ("", "", None) for what is not one (an opaque "null" origin)."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return "", "", None
    return (parts.scheme, parts.hostname or "", port) if parts.hostname else ("", "", None)


def create_app(live: LiveClassifier, options: ServeOptions | None = None) -> FastAPI:
    """The service for `live` (a classifier and its encoder); mount it in an ASGI app or run it with uvicorn."""
    options = options or ServeOptions()
    limits = options.limits
    limits.check()
    metrics = Metrics()
    metrics.served(live.version)
    encoder = live.encoder
    budget = MemoryBudget(limits.memory_bytes)
    queue = ImageQueue(limits.queue_images)
    decoding = anyio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))  # decodes at once: one per core
    batcher = Batcher(lambda jobs: _encoded_and_scored(live, jobs), workers=options.workers,
                      on_batch=metrics.batch.observe)
    app = FastAPI(title="imprint", version=_version(), summary="Classify images and teach new classes by example, "
                  "with no training step.", lifespan=_closing(batcher), docs_url=None, redoc_url=None)
    app.state.live, app.state.metrics, app.state.budget, app.state.queue = live, metrics, budget, queue

    app.add_middleware(Guarded, hosts=tuple(options.allowed_hosts), origins=tuple(options.allowed_origins))
    app.add_middleware(Measured, metrics=metrics, limits=limits, budget=budget)  # outermost: counts refusals too

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _problem(exc.status, exc.message)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return _busy(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _problem(422, f"{where}: {first.get('msg', 'invalid')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return _problem(500, f"internal error ({type(exc).__name__}): a bug in imprint; the server goes on serving")

    async def done_by_batch(request: Request, top_k: int | None) -> tuple[list[Any], list[bytes] | None]:
        """Each image of the request encoded (and, with `top_k`, predicted) together with those of other
        requests: (embeddings, or (version, prediction) pairs; thumbnails of the images when teaching)."""
        queue.check()
        images = await read_images(request, limits)
        with queue.taking(len(images)):
            pixels, thumbnails = await anyio.to_thread.run_sync(
                preprocessed, images, encoder.transform, budget, limits, top_k is None, limiter=decoding)
            del images
            results = await asyncio.wrap_future(batcher.submit([(row, top_k) for row in pixels]))
        metrics.images.labels("predict" if top_k else "teach").inc(len(results))
        return results, thumbnails

    token = None if options.token is None else b"Bearer " + options.token.encode("utf-8")

    def allowed(request: Request) -> None:
        if options.read_only:
            raise BadRequest(403, "this server is read-only (started with --read-only): classes cannot be changed")
        if token is not None:  # header values arrive as latin-1 text: encoding them so gives the bytes sent
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, token):
                raise BadRequest(401, "changing classes needs the server's token: send the header "
                                      "'Authorization: Bearer <token>'")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("imprint.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(STATIC.joinpath("favicon.png").read_bytes(), media_type="image/png",
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="imprint API",
                                   swagger_js_url="static/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="static/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="favicon.ico", swagger_ui_parameters={"validatorUrl": None})

    @app.get("/static/swagger-ui/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> Response:
        kinds = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
        if name not in kinds:
            raise BadRequest(404, f"no such file: {name[:80]}")
        return Response(STATIC.joinpath("swagger-ui", name).read_bytes(), media_type=kinds[name],
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/health", response_model=Health)
    async def health() -> Health:  # answered on the event loop, never behind decodes in the thread pool
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
        found, _ = await done_by_batch(request, top_k)
        return Predictions(version=found[0][0], predictions=[_prediction(p, top_k) for _, p in found])

    @app.get("/classes", response_model=Classes)
    async def classes() -> Classes:
        version = await anyio.to_thread.run_sync(live.current)
        return Classes(classes=version.classes(), version=version.number, can_remove=_can_remove(version),
                       read_only=options.read_only)

    @app.get("/classes/{name}/examples", response_model=Examples, responses=ERRORS)
    async def examples(name: str, limit: int = Query(60, ge=0, le=1000, description="thumbnails at most")) \
            -> Examples:
        """The examples class `name` was taught with: their count, and small pictures of those taught through
        this service (most recent last)."""
        version = live.version
        label = _known(live, name)
        kept = version.classifier.examples_
        rows = kept.of(label) if kept is not None and label in kept else None
        pictures = kept.thumbnails_of(label)[-limit:] if rows is not None and limit else []
        return Examples(name=_plain(label), count=None if rows is None else len(rows),
                        thumbnails=["data:image/jpeg;base64," + base64.b64encode(p).decode("ascii")
                                    for p in pictures if p])

    @app.post("/classes/{name}/examples", response_model=Change, responses=ERRORS, openapi_extra=IMAGES_BODY)
    async def teach(request: Request, name: str) -> Change:
        """Add example images to a class: a new class, or one taught by example before (imprinted again from
        all its examples). No training: the class is used by the very next prediction."""
        allowed(request)
        _check_name(name)
        found, thumbnails = await done_by_batch(request, None)
        version = await run_in_threadpool(_changed, live.teach, name, np.stack(found), thumbnails)
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
        version = live.current()
        top_k = max(jobs[i][1] for i in wanted)
        found = predictions(version.classifier, [""] * len(wanted), embeddings[wanted], top_k)
        for i, prediction in zip(wanted, found):
            out[i] = (version.number, prediction)
    return out


STORAGE_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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
    except WriteError as exc:  # nothing was changed: the served classifier and its file are as they were
        if exc.errno in STORAGE_FULL:
            raise BadRequest(507, "the server's disk is full: the class change could not be saved and was not made "
                                  "(the served classifier and its file are unchanged); free space on the server "
                                  "and send it again") from None
        raise BadRequest(500, f"the class change could not be saved ({exc.strerror}) and was not made (the served "
                              "classifier and its file are unchanged)") from None


def _known(live: LiveClassifier, name: str) -> Any:
    """The label of class `name`, or 404."""
    try:
        label = live.label_of(name)
    except UserError:
        label = None
    if label is None or label not in set(live.version.classifier.classes_.tolist()):
        raise BadRequest(404, f"no class named {name[:80]!r}")
    return label


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
    return ImagePrediction(label=_plain(found.label), probability=found.probability,
                           top=[Alternative(label=_plain(label), probability=probability)
                                for label, probability in found.top[:top_k]],
                           unknown_score=found.unknown_score, threshold=found.threshold,
                           accepted=(not found.rejected) if rejects else None)


def _plain(label: Any) -> Any:
    return label.item() if hasattr(label, "item") else label


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _busy(exc: Overloaded) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=503, headers={"Retry-After": str(exc.retry_after)})


def _closing(batcher: Batcher) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        batcher.start()  # again, where an earlier lifespan of this app closed it
        yield
        batcher.close()
    return lifespan


def _version() -> str:
    from imprint import __version__

    return __version__
