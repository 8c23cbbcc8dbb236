"""Devices and precision: where tensors run and whether bf16 pays off there.

bf16 autocast is used on CUDA and on CPUs with native bf16 matmuls (AMX or AVX-512 BF16); elsewhere fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from nextaction.batches import (
    Batch,
)


def bf16_supported() -> bool:
    """True on CPUs with native bf16 matmuls (AMX or AVX-512 BF16), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(p: str) -> Literal["bf16", "fp32"]:
    if p == "auto":
        return "bf16" if bf16_supported() else "fp32"
    return "bf16" if p == "bf16" else "fp32"


def batch_to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with its tensors on ``device`` (the same tensors when they are there already)."""
    return Batch(batch.items.to(device), batch.behaviors.to(device), batch.timestamps.to(device))


def device_precision(p: str, device: torch.device) -> Literal["bf16", "fp32"]:
    """:func:`resolve_precision` on ``device``: ``auto`` is bf16 on CUDA too (autocast there)."""
    return "bf16" if device.type == "cuda" and p == "auto" else resolve_precision(p)
