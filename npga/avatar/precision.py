"""The number format the avatar's networks run in when they only draw pictures (never in training).

float32 is exact; tf32 (CUDA only) multiplies float32 matrices on the tensor cores with a 10-bit mantissa;
bfloat16 runs the networks under autocast (8-bit mantissa). Only the networks change format: head poses,
Gaussians and the rasterizer stay float32, so a head does not move by the rounding of its own position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "float32", "tf32", "bfloat16"]
Resolved = Literal["float32", "tf32", "bfloat16"]


def cpu_has_bfloat16_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX-512 BF16; Linux's /proc/cpuinfo
    says). Elsewhere bfloat16 is emulated and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: Precision, device: torch.device) -> Resolved:
    """`auto`: bfloat16 on a GPU and on a CPU with bfloat16 units, float32 elsewhere (emulated bfloat16 is
    slower). Measured (benchmarks/RESULTS.md): on an H100 a 250k-Gaussian frame up to 1.25x faster (equal where
    the host's kernel launches bound the frame), the demo avatar's held-out PSNR -0.003 / -0.005 dB; on the
    2-core CPU an expression change 2.1x faster."""
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(f"precision 'tf32' is a CUDA tensor-core format; the avatar is on {device}")
    if precision != "auto":
        return precision
    return "bfloat16" if device.type == "cuda" or cpu_has_bfloat16_units() and device.type == "cpu" else "float32"


@contextlib.contextmanager
def network_precision(precision: Resolved, device: torch.device) -> Iterator[None]:
    """Run the networks called inside in `precision` (resolved); float32 changes nothing."""
    if precision == "bfloat16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "tf32":
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
    else:
        yield
