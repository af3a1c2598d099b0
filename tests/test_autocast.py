"""rgtp.autocast.autocast_dtype: what stream caches compare their dtype with."""

import torch

from rgtp.autocast import autocast_dtype


def test_autocast_dtype_is_none_outside_autocast_and_the_dtype_inside():
    assert autocast_dtype(torch.device("cpu")) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_dtype(torch.device("cpu")) is torch.bfloat16
        assert autocast_dtype("cpu") is torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert autocast_dtype(torch.device("cpu")) is None


def test_autocast_dtype_is_none_on_a_device_type_without_autocast():
    assert autocast_dtype(torch.device("meta")) is None
