"""Where torch runs: the device named by a setting, checked to exist on this machine."""
from __future__ import annotations

import torch

from imprint.errors import UserError, quoted


class DeviceError(UserError):
    """A device that is not a torch device, or not on this machine."""


def resolve_device(device: object) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else must name a device this machine has."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise DeviceError(f"device must be a word such as 'auto', 'cpu', 'cuda' or 'cuda:1'; got {quoted(device)}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {quoted(device)}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {quoted(device)}: this machine has no CUDA GPU that torch can use; use "
                              "--device cpu (or auto)")
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {quoted(device)}: this machine has {count} CUDA GPU(s) (cuda:0 to "
                              f"cuda:{count - 1})")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                       and torch.backends.mps.is_available()):
        raise DeviceError(f"device {quoted(device)}: MPS is not available on this machine; use --device cpu")
    return resolved
