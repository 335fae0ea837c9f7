"""FLOPs and parameter accounting for HSTU runs (torch-free)."""

from scaling.flops import FLOPS_CONVENTION, ForwardFlops, RunFlops, forward_flops, run_flops
from scaling.params import ParamCounts, count_params

__all__ = [
    "FLOPS_CONVENTION",
    "ForwardFlops",
    "ParamCounts",
    "RunFlops",
    "count_params",
    "forward_flops",
    "run_flops",
]
