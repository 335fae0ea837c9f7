"""FLOPs and parameter accounting, compute grids and the cost model for HSTU runs (torch-free).

`scaling.measure` (torch: the CPU peak and a FlopCounterMode-measured training step) is not
imported here; import it explicitly where torch is already loaded.
"""

from scaling.cost import CostEstimate, CostInputs, cost, device_hours
from scaling.elementwise import ELEMENTWISE_CONVENTION, ElementwiseFlops, elementwise_flops
from scaling.flops import FLOPS_CONVENTION, ForwardFlops, RunFlops, forward_flops, num_evaluations, run_flops
from scaling.grid import FixedAspect, FixedDepth, GridPoint, configs_for_budget, data_for_budget
from scaling.hardware import PEAKS, DevicePeak, device_from_name, mfu, peak_flops
from scaling.params import ParamCounts, count_params, run_params

__all__ = [
    "ELEMENTWISE_CONVENTION",
    "FLOPS_CONVENTION",
    "PEAKS",
    "CostEstimate",
    "CostInputs",
    "DevicePeak",
    "ElementwiseFlops",
    "FixedAspect",
    "FixedDepth",
    "ForwardFlops",
    "GridPoint",
    "ParamCounts",
    "RunFlops",
    "configs_for_budget",
    "cost",
    "count_params",
    "data_for_budget",
    "device_from_name",
    "device_hours",
    "elementwise_flops",
    "forward_flops",
    "mfu",
    "num_evaluations",
    "peak_flops",
    "run_flops",
    "run_params",
]
