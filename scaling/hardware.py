"""Peak FLOP/s of the accelerators runs are costed on, and MFU (torch-free).

Peaks are NVIDIA's datasheet figures for dense math (no 2:4 structured sparsity; the datasheets'
headline tensor-core numbers are the sparse ones, twice these). bf16 and tf32 are tensor-core
peaks; fp32 is the non-tensor-core (CUDA core) peak. H200 has H100 SXM's compute (it differs in
memory: 141 GB HBM3e). A CPU has no datasheet peak here: `scaling.measure.cpu_peak_flops` times a
float32 matmul at the current thread count instead, and that measured figure is the CPU "peak".

MFU (model FLOPs utilisation) = model FLOPs / (seconds x peak FLOP/s), where model FLOPs are the
analytic matmul FLOPs of `scaling.flops` (dense-jagged convention), not hardware-counted ones.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Precision = Literal["bf16", "tf32", "fp32"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class DevicePeak:
    """Dense peak FLOP/s of one device."""

    name: str
    bf16: float  # tensor cores, dense
    tf32: float  # tensor cores, dense
    fp32: float  # CUDA cores

    def peak(self, precision: Precision = "bf16") -> float:
        if precision not in ("bf16", "tf32", "fp32"):
            raise ValueError(f"precision must be one of ['bf16', 'tf32', 'fp32'], got {precision!r}")
        return float(getattr(self, precision))


PEAKS: dict[str, DevicePeak] = {
    "h100-sxm": DevicePeak(name="NVIDIA H100 SXM", bf16=989e12, tf32=494.5e12, fp32=67e12),
    "h100-pcie": DevicePeak(name="NVIDIA H100 PCIe", bf16=756e12, tf32=378e12, fp32=51e12),
    "h200": DevicePeak(name="NVIDIA H200 SXM", bf16=989e12, tf32=494.5e12, fp32=67e12),
    "a100": DevicePeak(name="NVIDIA A100 SXM", bf16=312e12, tf32=156e12, fp32=19.5e12),
}


def peak_flops(device: str, precision: Precision = "bf16") -> float:
    """Dense peak FLOP/s of a device in `PEAKS` at a precision."""
    if device not in PEAKS:
        raise ValueError(
            f"unknown device {device!r}; known devices are {sorted(PEAKS)} "
            "(for a CPU use scaling.measure.cpu_peak_flops())"
        )
    return PEAKS[device].peak(precision)


def device_from_name(name: str) -> str | None:
    """The `PEAKS` key of a device name as CUDA reports it (e.g. "NVIDIA H100 80GB HBM3"), else None.

    H100 without "PCIe" in its name is taken as SXM (the HBM3 parts), the datasheet's main variant.
    """
    upper = name.upper()
    if "H200" in upper:
        return "h200"
    if "H100" in upper:
        return "h100-pcie" if "PCIE" in upper else "h100-sxm"
    if "A100" in upper:
        return "a100"
    return None


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: flops / (seconds x peak FLOP/s)."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if peak <= 0:
        raise ValueError(f"peak must be > 0 FLOP/s, got {peak}")
    if flops < 0:
        raise ValueError(f"flops must be >= 0, got {flops}")
    return flops / (seconds * peak)
