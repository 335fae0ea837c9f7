"""Cost model: training FLOPs -> device-hours -> wall-clock hours and money (torch-free).

device-hours = FLOPs / (peak FLOP/s x MFU) / 3600, with the peak from `scaling.hardware.PEAKS`
(or given, e.g. a measured CPU peak). Wall-clock hours divide device-hours by the number of
devices: parallel inefficiency belongs in the MFU, which is per device. Money = device-hours x
price per device-hour. Use the MFU measured on the target hardware (`mfu` in the ledger's
results) rather than a guess where one exists.
"""

from __future__ import annotations

import dataclasses

from scaling.hardware import PEAKS, Precision, peak_flops

_SECONDS_PER_HOUR = 3600.0


def _check_mfu(mfu: float, label: str = "mfu") -> None:
    if not 0.0 < mfu <= 1.0:
        raise ValueError(f"{label} must be in (0, 1], got {mfu}")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CostInputs:
    """What a FLOPs figure is costed on."""

    device: str = "h100-sxm"  # a key of scaling.hardware.PEAKS, or a label when peak_flops_per_s is given
    mfu: float = 0.4
    price_per_device_hour: float = 0.0  # in any currency; the estimate is in the same one
    num_devices: int = 1
    precision: Precision = "bf16"
    peak_flops_per_s: float | None = None  # overrides the table (e.g. a measured CPU peak)

    def __post_init__(self) -> None:
        if self.peak_flops_per_s is None and self.device not in PEAKS:
            raise ValueError(
                f"cost.device must be one of {sorted(PEAKS)} (or give cost.peak_flops_per_s), got {self.device!r}"
            )
        if self.peak_flops_per_s is not None and not self.peak_flops_per_s > 0:
            raise ValueError(f"cost.peak_flops_per_s must be > 0, got {self.peak_flops_per_s}")
        if self.precision not in ("bf16", "tf32", "fp32"):
            raise ValueError(f"cost.precision must be one of ['bf16', 'tf32', 'fp32'], got {self.precision!r}")
        _check_mfu(self.mfu, "cost.mfu")
        if not self.price_per_device_hour >= 0:
            raise ValueError(f"cost.price_per_device_hour must be >= 0, got {self.price_per_device_hour}")
        if isinstance(self.num_devices, bool) or not isinstance(self.num_devices, int) or self.num_devices < 1:
            raise ValueError(f"cost.num_devices must be an integer >= 1, got {self.num_devices!r}")

    @property
    def peak(self) -> float:
        if self.peak_flops_per_s is not None:
            return self.peak_flops_per_s
        return peak_flops(self.device, self.precision)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CostEstimate:
    flops: float
    device_hours: float
    wall_clock_hours: float
    cost: float
    inputs: CostInputs

    def to_dict(self) -> dict[str, object]:
        return {
            "flops": self.flops,
            "device_hours": self.device_hours,
            "wall_clock_hours": self.wall_clock_hours,
            "cost": self.cost,
            "inputs": dataclasses.asdict(self.inputs),
        }


def _check_flops(flops: float) -> None:
    if not flops >= 0:
        raise ValueError(f"flops must be >= 0, got {flops}")


def device_hours(flops: float, device: str, mfu: float, precision: Precision = "bf16") -> float:
    """Device-hours to execute `flops` on a `PEAKS` device running at `mfu` of its dense peak."""
    _check_flops(flops)
    _check_mfu(mfu)
    return flops / (peak_flops(device, precision) * mfu) / _SECONDS_PER_HOUR


def cost(flops: float, inputs: CostInputs) -> CostEstimate:
    """Device-hours, wall-clock hours and money for `flops` under `inputs`."""
    _check_flops(flops)
    hours = flops / (inputs.peak * inputs.mfu) / _SECONDS_PER_HOUR
    return CostEstimate(
        flops=flops,
        device_hours=hours,
        wall_clock_hours=hours / inputs.num_devices,
        cost=hours * inputs.price_per_device_hour,
        inputs=inputs,
    )
