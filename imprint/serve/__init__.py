"""Serve a classifier over HTTP and teach it new classes by example while it runs (``imprint serve``).

``open_live`` loads a classifier file with its encoder; ``create_app`` makes the FastAPI app (to run with any
ASGI server, or mount in one's own); ``serve`` does both and runs uvicorn."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from imprint.errors import UserError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


def open_live(path: str | os.PathLike, read_only: bool = False, **embedding: Any) -> Any:
    """The classifier file at `path` with its encoder, ready to serve; `embedding`: ``EmbedOptions`` fields
    (encoder, runtime, threads, ...)."""
    from imprint.deployed import open_classifier
    from imprint.embedder import EmbedOptions
    from imprint.serve.live import LiveClassifier

    classifier, embedder = open_classifier(path, EmbedOptions(**embedding))
    return LiveClassifier(path, classifier, embedder.encoder, read_only=read_only)


def read_token(path: str | os.PathLike | None) -> str | None:
    """The API token from a file (its first line), or $IMPRINT_SERVE_TOKEN, or None (no token needed)."""
    if path is None:
        return os.environ.get("IMPRINT_SERVE_TOKEN") or None
    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the token file {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if not token or len(token[0]) < 8:
        raise UserError(f"the token file {path} must hold a token of at least 8 characters on its first line")
    return token[0]


def serve(path: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, read_only: bool = False,
          token: str | None = None, max_images: int = 64, max_image_mb: float = 20.0,
          log: Any = print, **embedding: Any) -> None:
    """Serve the classifier file at `path` until interrupted (Ctrl-C)."""
    if not 1 <= max_images <= 10_000 or not 0 < max_image_mb <= 1024:
        raise UserError("--max-images is 1 to 10000 and --max-image-mb above 0 and at most 1024")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a port number (0 to 65535)")
    sock = _bound(host, port)  # before anything heavy is imported: a port in use is a one-line answer at once
    import uvicorn

    from imprint.serve.app import ServeOptions, create_app
    from imprint.serve.uploads import Limits

    live = open_live(path, read_only=read_only, **embedding)
    app = create_app(live, ServeOptions(read_only=read_only, token=token,
                                        limits=Limits(max_images, int(max_image_mb * 2**20))))
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    log(f"serving {len(live.version.classifier.classes_)} classes of {path} with {live.encoder.id} on "
        f"http://{shown}:{bound_port}/ (API: /docs; Ctrl-C stops)")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _bound(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a one-line error naming the fix."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        raise UserError(f"--host {host!r} is not an address of this machine (e.g. 127.0.0.1 or 0.0.0.0)") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port, or stop "
                        "what uses it") from None
    sock.listen(2048)
    return sock
