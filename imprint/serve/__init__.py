"""Serve a classifier over HTTP and teach it new classes by example while it runs (``imprint serve``).

``open_live`` loads a classifier file with its encoder; ``create_app`` makes the FastAPI app (to run with any
ASGI server, or mount in one's own); ``serve`` does both and runs uvicorn."""
from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from imprint.core.errors import UserError, require

require(("fastapi", "uvicorn", "python_multipart", "prometheus_client"), "serve", "imprint serve")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


def open_live(path: str | os.PathLike, read_only: bool = False, **embedding: Any) -> Any:
    """The classifier file at `path` with its encoder, ready to serve; `embedding`: ``EmbedOptions`` fields
    (encoder, runtime, threads, ...)."""
    from imprint.serve.live import LiveClassifier
    from imprint.workflows.deployed import open_classifier
    from imprint.workflows.embedder import EmbedOptions

    classifier, embedder = open_classifier(path, EmbedOptions(**embedding))
    return LiveClassifier(path, classifier, embedder.encoder, read_only=read_only)


MIN_TOKEN = 16  # characters


def read_token(path: str | os.PathLike | None) -> str | None:
    """The API token from a file (its first line), or $IMPRINT_SERVE_TOKEN, or None (no token needed); a token
    shorter than 16 characters is refused."""
    if path is None:
        token = os.environ.get("IMPRINT_SERVE_TOKEN") or None
        if token is not None and len(token.strip()) < MIN_TOKEN:
            raise UserError(f"$IMPRINT_SERVE_TOKEN must be at least {MIN_TOKEN} characters; a short token is guessed "
                            "(python -c 'import secrets; print(secrets.token_urlsafe(24))' makes one)")
        return None if token is None else token.strip()
    try:
        lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the token file {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if not lines or len(lines[0].strip()) < MIN_TOKEN:
        raise UserError(f"the token file {path} must hold a token of at least {MIN_TOKEN} characters on its first "
                        "line (python -c 'import secrets; print(secrets.token_urlsafe(24))' makes one)")
    return lines[0].strip()


def serve(path: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, read_only: bool = False,
          token: str | None = None, max_images: int = 64, max_image_mb: float = 20.0, max_request_mb: float = 100.0,
          memory_mb: float = 1024.0, max_queue: int = 256, allow_hosts: tuple[str, ...] = (),
          allow_origins: tuple[str, ...] = (), log: Any = print, **embedding: Any) -> None:
    """Serve the classifier file at `path` until interrupted (Ctrl-C or SIGTERM: requests in progress are
    answered first). The server answers the host names of the address it listens on, and `allow_hosts`;
    requests that are not reads only from its own pages, and `allow_origins`."""
    from imprint.serve.admission import Limits

    limits = Limits(max_images, int(max_image_mb * 2**20), int(max_request_mb * 2**20), int(memory_mb * 2**20),
                    max_queue)
    limits.check()
    origins = tuple(check_origin(origin) for origin in allow_origins)
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a port number (0 to 65535)")
    sock = _bound(host, port)  # before anything heavy is imported: a port in use is a one-line answer at once
    import uvicorn

    from imprint.serve.app import ServeOptions, create_app
    from imprint.serve.live import check_backup_place

    if not read_only:
        check_backup_place(Path(path))
    live = open_live(path, read_only=read_only, **embedding)
    app = create_app(live, ServeOptions(read_only=read_only, token=token, limits=limits,
                                        allowed_hosts=host_names(host, allow_hosts), allowed_origins=origins))
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # listening, its signal handlers in place: said only now
                log(f"serving {len(live.version.classifier.classes_)} classes of {path} with {live.encoder.id} on "
                    f"http://{shown}:{bound_port}/ (API: /docs; Ctrl-C stops)")
                sys.stdout.flush()

        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                log(f"imprint serve: shutting down ({signal.Signals(sig).name}): answering the requests in "
                    "progress, then stopping")
                sys.stdout.flush()  # the signal is raised again once the server stops: nothing is flushed after
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def host_names(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Host header names a server listening on `host` answers to: the loopback names for a loopback address;
    for another address, it and this machine's names; for every address (0.0.0.0, ::), the loopback names, this
    machine's names and addresses; then `extra` ("*": any name)."""
    names = {host.lower()}
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    everywhere = host in ("0.0.0.0", "::", "")
    if loopback or everywhere:
        names |= {"localhost", "127.0.0.1", "::1"}
    if not loopback:
        machine = socket.gethostname()
        names |= {machine.lower(), socket.getfqdn().lower()}
        if everywhere:
            try:
                names |= {info[4][0].lower() for info in socket.getaddrinfo(machine, None)}
            except OSError:
                pass
    return tuple(sorted(names | {name.lower().strip("[]") for name in extra}))


def check_origin(origin: str) -> str:
    """An origin for --allow-origin (scheme://host[:port]), or a one-line error."""
    from urllib.parse import urlsplit

    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise UserError(f"--allow-origin {origin[:80]!r} is not an origin; give scheme://host[:port], e.g. "
                        "http://localhost:3000")
    return origin.rstrip("/")


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
