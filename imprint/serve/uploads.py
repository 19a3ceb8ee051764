"""Images sent to the service: multipart form parts named ``images`` or JSON ``{"images": ["<base64>", ...]}``,
read within the service's limits and decoded as ``imprint predict`` decodes files."""
from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from starlette.datastructures import UploadFile
from starlette.requests import Request

from imprint.data.folder import UnreadableImage, load_rgb


@dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_images: int = 64
    max_image_bytes: int = 20 * 2**20

    @property
    def max_request_bytes(self) -> int:
        """Every image at its largest, base64-encoded (4/3), plus room for the form's own text."""
        return self.max_images * self.max_image_bytes * 4 // 3 + 2**20


class BadRequest(Exception):
    """A request the service refuses: its HTTP status and a one-line message naming the problem and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_images(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in the request, in the order sent."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        images = await _from_form(request, limits)
    elif kind == "application/json":
        images = await _from_json(request, limits)
    else:
        raise BadRequest(415, f"send images as multipart/form-data parts named 'images' or as JSON "
                              f"{{\"images\": [\"<base64>\", ...]}}, not {kind or 'a body without a content type'}")
    if not images:
        raise BadRequest(400, "the request has no images: send at least one (form parts named 'images', or JSON "
                              "{\"images\": [...]})")
    if len(images) > limits.max_images:
        raise BadRequest(413, f"{len(images)} images in one request; at most {limits.max_images} (split it)")
    return images


async def _from_form(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=limits.max_images + 1, max_fields=limits.max_images + 10)
    except BadRequest:
        raise
    except Exception as exc:  # the parser's own refusals (too many parts, a malformed body)
        raise BadRequest(400, f"malformed multipart body ({str(exc)[:120] or type(exc).__name__})") from None
    try:
        return await _form_images(form, limits)
    finally:
        await form.close()  # the parts' temporary files


async def _form_images(form: Any, limits: Limits) -> list[tuple[str, bytes]]:
    images = []
    for index, part in enumerate(form.getlist("images"), 1):
        if not isinstance(part, UploadFile):
            raise BadRequest(400, f"form part {index} named 'images' is text, not a file; send the image's bytes")
        if part.size is not None and part.size > limits.max_image_bytes:
            raise BadRequest(413, f"image {index} ({part.filename or 'unnamed'}) has {part.size} bytes; at most "
                                  f"{limits.max_image_bytes} per image")
        images.append((part.filename or f"image {index}", await part.read()))
    others = [key for key in form.keys() if key != "images"]
    if others and not images:
        raise BadRequest(400, f"form parts must be named 'images', not {others[0][:40]!r}")
    return images


async def _from_json(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    try:
        body = await request.json()
    except BadRequest:
        raise
    except ValueError:
        raise BadRequest(400, "the body is not valid JSON; send {\"images\": [\"<base64>\", ...]}") from None
    items = body.get("images") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise BadRequest(400, "JSON bodies are {\"images\": [\"<base64>\", ...]}: a list of base64 strings")
    images = []
    for index, item in enumerate(items[:limits.max_images + 1], 1):
        text = item.split(",", 1)[1] if item.startswith("data:") and "," in item else item  # a data: URL too
        if len(text) * 3 // 4 > limits.max_image_bytes + 3:
            raise BadRequest(413, f"image {index} is larger than {limits.max_image_bytes} bytes")
        try:
            images.append((f"image {index}", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise BadRequest(400, f"image {index} is not valid base64") from None
    return images


def preprocessed(images: list[tuple[str, bytes]], transform: Callable) -> torch.Tensor:
    """The images decoded and preprocessed for the encoder (N x 3 x H x W); one that cannot be read ends the
    request with a message naming it (nothing of a request is used unless all of it is)."""
    pixels = []
    for index, (name, data) in enumerate(images, 1):
        try:
            pixels.append(transform(load_rgb(io.BytesIO(data))))
        except UnreadableImage as exc:
            raise BadRequest(422, f"image {index} ({name[:80]}): {exc}") from None
    return torch.stack(pixels)
