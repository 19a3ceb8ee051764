"""Grid protocols: how a cell is evaluated, registered by name like the pipeline's stages (one file each).

A protocol fits a classifier on a cell's support set (``fit``), scores it (``measure``: accuracy, macro-F1,
validation accuracy, times, and its own metrics) and checks the parts of a config it needs (``check``). The
config key ``protocol: NAME`` picks one; a new protocol is one file that registers itself here.
"""
from imprint.grid.protocols import closed_set, episodes, incremental, open_set  # noqa: F401 (they register)
from imprint.grid.protocols.base import PROTOCOLS, Protocol, Task

__all__ = ["PROTOCOLS", "Protocol", "Task"]
