"""Devices and precision: what "auto" resolves to, and moving batches."""

from __future__ import annotations

import torch

from nextaction.batches import from_lists
from nextaction.device import batch_to_device, bf16_supported, device_precision, resolve_precision


def test_explicit_precisions_are_kept_and_auto_follows_the_cpu():
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") == ("bf16" if bf16_supported() else "fp32")


def test_auto_is_bf16_on_cuda_whatever_the_cpu():
    cuda = torch.device("cuda")
    assert device_precision("auto", cuda) == "bf16"
    assert device_precision("fp32", cuda) == "fp32"
    assert device_precision("auto", torch.device("cpu")) == resolve_precision("auto")


def test_moving_a_batch_to_its_own_device_keeps_its_tensors():
    batch = from_lists([[3, 1, 2], [4]], [[1, 1, 2], [1]], [[0, 1000, 2000], [5000]], 4)
    moved = batch_to_device(batch, torch.device("cpu"))
    assert moved.items is batch.items and moved.behaviors is batch.behaviors
    assert moved.timestamps is batch.timestamps
