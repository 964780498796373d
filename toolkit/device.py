"""Choosing the device, threads and precision for training and inference.

One code path serves CPU and CUDA. On CUDA, bf16 autocast and channels-last memory help; on
a CPU without native bf16 (no AVX512-BF16 or AMX, like this project's 2-core AVX2 machines)
bf16 was measured about 10x slower than fp32, so fp32 is used there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from toolkit.errors import SampleSiftError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SampleSiftError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise SampleSiftError(f"unknown device {device!r}; use auto, cpu or cuda")


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The autocast dtype to train in: bf16 on CUDA (and bf16-capable CPUs), else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise SampleSiftError(f"unknown precision {precision!r}; use auto, fp32 or bf16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[None]:
    """Autocast to ``dtype``, or nothing at all for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_threads(threads: int | None = None) -> int:
    """Use one torch thread per core unless told otherwise (SAMPLESIFT_THREADS or ``threads``)."""
    chosen = threads or int(os.environ.get("SAMPLESIFT_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(chosen)
    return chosen


def configure_cuda() -> None:
    """Fast settings for fixed-shape training on CUDA: cuDNN autotuning and TF32 matmuls."""
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Full float32 matmuls inside (no TF32), whatever :func:`configure_cuda` set for training.

    Selections rank near-equal distances; at TF32's 10-bit mantissa a CUDA selection would
    differ from the same selection on a CPU.
    """
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (model initialisation) under a fixed torch seed without leaking it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
