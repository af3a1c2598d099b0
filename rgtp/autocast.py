"""Which precision autocast computes in now: cached tensors made under another are stale."""

from __future__ import annotations

from typing import Optional

import torch


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """Autocast's dtype for ``device``'s type when autocast is on there, else None (also for device types without
    autocast, e.g. ``meta``)."""
    kind = torch.device(device).type
    try:
        if not torch.is_autocast_enabled(kind):
            return None
    except RuntimeError:  # a device type without autocast
        return None
    return torch.get_autocast_dtype(kind)
