"""Seeds: one run seed, stable per-purpose seeds derived from it, and the global generators.

A ground-floor module (it imports nothing from the package), so that methods, data, the
training loop and the benchmarks all derive seeds the same way without importing each other.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "seed_everything"]


def derive_seed(seed: int, purpose: str) -> int:
    """A stable seed for one purpose ("noise", "splits", "epoch-3", ...) derived from the run seed."""
    return (int(seed) * 1_000_003 + zlib.crc32(purpose.encode())) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
