"""Images sent to the service: multipart form parts named ``images`` or JSON ``{"images": ["<base64>", ...]}``,
read within the service's limits and decoded as ``imprint predict`` decodes files, each decode within the
server's memory budget."""
from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request

from imprint.data.folder import UnreadableImage, decode_bytes, load_rgb
from imprint.serve.admission import Limits, MemoryBudget

DECODE_WAIT = 5.0  # seconds a decode waits for memory that other requests hold, before 503


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
    """The images of a JSON body, holding about twice the body at most: the body is read into one buffer (of its
    declared length where there is one), turned into text and dropped, the text parsed and dropped, and each
    string dropped once decoded (``request.json()`` holds the chunks, the body, its text and the strings)."""
    declared = request.headers.get("content-length", "")
    body = bytearray(int(declared) if declared.isdigit() and int(declared) <= limits.max_request_bytes else 0)
    filled = 0
    async for chunk in request.stream():
        if filled + len(chunk) > len(body):  # more than declared, or no length: grow as it comes
            body.extend(bytes(filled + len(chunk) - len(body)))
        body[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    try:
        with memoryview(body) as view:
            text = str(view[:filled], "utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "the body is not valid JSON (not UTF-8 text); send {\"images\": [\"<base64>\", "
                              "...]}") from None
    del body
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise BadRequest(400, "the JSON body is nested too deeply; send {\"images\": [\"<base64>\", ...]}") from None
    except ValueError:
        raise BadRequest(400, "the body is not valid JSON; send {\"images\": [\"<base64>\", ...]}") from None
    del text
    items = parsed.get("images") if isinstance(parsed, dict) else None
    del parsed
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise BadRequest(400, "JSON bodies are {\"images\": [\"<base64>\", ...]}: a list of base64 strings")
    del items[limits.max_images + 1:]
    images = []
    for index in range(len(items)):
        item, items[index] = items[index], ""
        text = item.split(",", 1)[1] if item.startswith("data:") and "," in item[:200] else item  # a data: URL too
        if len(text) * 3 // 4 > limits.max_image_bytes + 3:
            raise BadRequest(413, f"image {index + 1} is larger than {limits.max_image_bytes} bytes")
        try:
            images.append((f"image {index + 1}", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise BadRequest(400, f"image {index + 1} is not valid base64") from None
        del item, text
    return images


THUMBNAIL = 64  # pixels, the longest side of the small JPEG kept of an image a class is taught with


def preprocessed(images: list[tuple[str, bytes]], transform: Callable, budget: MemoryBudget, limits: Limits,
                 thumbnails: bool = False) -> tuple[torch.Tensor, list[bytes] | None]:
    """The images decoded and preprocessed for the encoder (N x 3 x H x W), one at a time, each decode holding
    its share of the memory budget (from the image's header: pixels, bit depth and mode) while it runs, and with
    `thumbnails` a small JPEG of each. One that cannot be read, or would decode larger than an image may, ends
    the request with a message naming it (nothing of a request is used unless all of it is); a decode the budget
    cannot hold now is Overloaded (503)."""
    pixels, small = [], []
    for index, (name, data) in enumerate(images, 1):
        try:
            with Image.open(io.BytesIO(data)) as header:
                need = decode_bytes(header)
        except Exception:  # not an image, or a header Pillow refuses: load_rgb names the reason below
            need = 0
        if need > limits.max_decoded_bytes:
            raise BadRequest(413, f"image {index} ({name[:80]}) would take {need / 2**20:.0f} MB decoded (its pixels "
                                  f"at their bit depth); at most {limits.max_decoded_bytes // 2**20} MB per image: "
                                  "send it smaller")
        try:
            with budget.held(need, f"image {index}", wait=DECODE_WAIT):
                image = load_rgb(io.BytesIO(data))
                pixels.append(transform(image))
                if thumbnails:
                    small.append(_thumbnail(image))
                del image
        except UnreadableImage as exc:
            raise BadRequest(422, f"image {index} ({name[:80]}): {exc}") from None
    return torch.stack(pixels), (small if thumbnails else None)


def _thumbnail(image: Image.Image) -> bytes:
    """A small JPEG of `image` (made smaller in place: it is not used again)."""
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
