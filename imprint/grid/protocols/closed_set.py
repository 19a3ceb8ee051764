"""Closed set: every test image is of one of the task's classes; accuracy and macro-F1 on them."""
from imprint.grid.protocols.base import PROTOCOLS, Protocol


@PROTOCOLS.register("closed_set")
class ClosedSet(Protocol):
    """Fit on the support set, predict the test images of the task's classes."""
