"""The device to run on, and which floating-point type the forward pass runs in there (chapters 05, 11 and 12).

Mixed precision pays only where the hardware multiplies the smaller type natively:

* a GPU of compute capability 8.0 or newer (A100, L4, RTX 30xx and later) has bfloat16 tensor cores:
  bfloat16, which keeps float32's range and needs no loss scaling;
* an older GPU (Colab's T4 is 7.5, a V100 7.0) has float16 tensor cores only. PyTorch reports
  bfloat16 "supported" there by emulation, which is slower than float32, so these get float16, and
  training scales the loss (``GradScaler``) so small gradients do not underflow;
* a CPU with AVX512-BF16 or AMX computes bfloat16 natively; other CPUs stay in float32.
"""

from __future__ import annotations

import torch

from .errors import DeviceUnavailable


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), so oneDNN's bfloat16
    convolutions beat float32. Elsewhere they are emulated and slower, so training stays in float32."""
    # torch.cpu's probes are private; a torch without them counts as a CPU without bfloat16
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def gpu_has_bf16(device: torch.device) -> bool:
    """Whether CUDA ``device`` has bfloat16 tensor cores: compute capability 8.0 or newer (not emulation)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype on ``device``: bfloat16 on a CPU and on a GPU of capability >= 8.0, float16
    on older GPUs (T4, V100)."""
    if device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and gpu_has_bf16(device) else torch.float16


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA if available, else CPU; ``"cuda"``: GPU ``local_rank`` (DeviceUnavailable if there is
    none); any other name as given.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable("--device cuda: no CUDA device is available here (use --device cpu or auto)")
        return torch.device("cuda", local_rank)
    return torch.device(device)
