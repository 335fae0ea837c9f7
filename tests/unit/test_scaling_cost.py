"""Peak table, MFU, the measured CPU peak and the cost model's arithmetic and validation."""

from __future__ import annotations

import time

import pytest

from scaling import PEAKS, CostInputs, cost, device_from_name, device_hours, mfu, peak_flops


def test_peak_table_is_dense_datasheet_figures() -> None:
    assert peak_flops("h100-sxm") == 989e12
    assert peak_flops("h100-pcie") == 756e12
    assert peak_flops("h200") == peak_flops("h100-sxm")  # same compute, more memory
    assert peak_flops("a100") == 312e12
    assert peak_flops("a100", "tf32") == 156e12 and peak_flops("a100", "fp32") == 19.5e12
    assert all(p.bf16 > p.tf32 > p.fp32 for p in PEAKS.values())
    with pytest.raises(ValueError, match="unknown device 'v100'"):
        peak_flops("v100")
    with pytest.raises(ValueError, match="precision"):
        peak_flops("a100", "fp8")  # type: ignore[arg-type]


def test_device_names_map_to_the_table() -> None:
    assert device_from_name("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert device_from_name("NVIDIA H100 PCIe") == "h100-pcie"
    assert device_from_name("NVIDIA H200") == "h200"
    assert device_from_name("NVIDIA A100-SXM4-80GB") == "a100"
    assert device_from_name("Tesla T4") is None


def test_mfu() -> None:
    assert mfu(1e12, 2.0, 1e12) == 0.5
    assert mfu(989e12 * 3600 * 0.4, 3600.0, 989e12) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        mfu(1e12, 0.0, 1e12)
    with pytest.raises(ValueError, match="peak must be > 0"):
        mfu(1e12, 1.0, 0.0)


def test_device_hours_and_cost_arithmetic() -> None:
    # One H100-hour at 50% MFU executes 989e12 * 0.5 * 3600 FLOPs.
    flops = 989e12 * 0.5 * 3600
    assert device_hours(flops, "h100-sxm", 0.5) == pytest.approx(1.0)
    assert device_hours(flops, "a100", 0.5) == pytest.approx(989 / 312)
    est = cost(10 * flops, CostInputs(device="h100-sxm", mfu=0.5, price_per_device_hour=2.5, num_devices=8))
    assert est.device_hours == pytest.approx(10.0)
    assert est.wall_clock_hours == pytest.approx(10.0 / 8)
    assert est.cost == pytest.approx(25.0)
    assert est.to_dict()["inputs"]["num_devices"] == 8
    # A measured peak (e.g. this CPU) replaces the table; the device is then only a label.
    cpu = cost(3.6e14, CostInputs(device="cpu", peak_flops_per_s=1e11, mfu=0.25, price_per_device_hour=0.1))
    assert cpu.device_hours == pytest.approx(3.6e14 / (1e11 * 0.25) / 3600)
    assert cpu.cost == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mfu": 0.0}, r"cost.mfu must be in \(0, 1\], got 0.0"),
        ({"mfu": 1.5}, r"cost.mfu must be in \(0, 1\], got 1.5"),
        ({"device": "tpu"}, "cost.device must be one of"),
        ({"price_per_device_hour": -1.0}, "cost.price_per_device_hour must be >= 0"),
        ({"num_devices": 0}, "cost.num_devices must be an integer >= 1"),
        ({"peak_flops_per_s": 0.0}, "cost.peak_flops_per_s must be > 0"),
        ({"precision": "fp8"}, "cost.precision must be one of"),
    ],
)
def test_cost_inputs_name_the_bad_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CostInputs(**kwargs)


def test_cost_functions_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"mfu must be in \(0, 1\]"):
        device_hours(1e18, "h100-sxm", 2.0)
    with pytest.raises(ValueError, match="flops must be >= 0"):
        cost(-1.0, CostInputs())


def test_measured_cpu_peak_is_plausible_and_cached() -> None:
    from scaling.measure import cpu_peak_flops

    first = cpu_peak_flops(size=256)
    assert 1e8 < first < 1e13  # a CPU core does between 0.1 GFLOP/s and 10 TFLOP/s of fp32 matmul
    started = time.perf_counter()
    assert cpu_peak_flops(size=256) == first  # cached: no second measurement
    assert time.perf_counter() - started < 0.01


def test_run_peak_is_the_datasheet_peak_of_a_known_gpu_at_the_run_precision() -> None:
    from scaling.measure import run_peak_flops

    peak, source = run_peak_flops("cuda:0 (NVIDIA H100 80GB HBM3)", "bf16", threads=4, processes=2)
    assert peak == 2 * 989e12
    assert source == "NVIDIA H100 SXM datasheet dense bf16, x 2 process(es)"
    peak, source = run_peak_flops("cuda:1 (NVIDIA H100 PCIe)", "fp32", threads=4)
    assert peak == 51e12 and source.startswith("NVIDIA H100 PCIe datasheet dense fp32")


def test_run_peak_on_the_cpu_is_its_measured_matmul_peak_at_the_run_threads() -> None:
    import torch

    from scaling.measure import cpu_peak_flops, run_peak_flops

    before = torch.get_num_threads()
    peak, source = run_peak_flops("cpu", "bf16", threads=1, processes=3)
    assert torch.get_num_threads() == before
    torch.set_num_threads(1)
    try:
        assert peak == 3 * cpu_peak_flops()  # the cached measurement at 1 thread
    finally:
        torch.set_num_threads(before)
    assert source == "cpu float32 matmul, measured at 1 thread(s), x 3 process(es)"
