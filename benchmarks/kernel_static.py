"""Static cost of the HSTU attention kernels, compiled for a GPU on a machine without one.

    python benchmarks/kernel_static.py                 # sm_90 and sm_80: table + benchmarks/results/kernel_static.json
    python benchmarks/kernel_static.py --arch 90 --kernels fwd --out /tmp/k.json
    python benchmarks/kernel_static.py --maxnreg 168       # registers capped: what each kernel spills at 168
    python benchmarks/kernel_static.py --all-configs       # and every tuning config: which meet the targets

Each kernel (forward, dk/dv, dq, and the backward's rab-gradient kernel) is compiled by Triton for the target (`triton.compile` with a
`GPUTarget`; no device needed) in three variants, bf16 with D = 64 and its first tuned config:

- norab      : no relative attention bias
- rab_exact  : the bias computed per logit on every tile (log2 polynomial, threshold and weight
               gathers): the kernels before the fast path, and today's path for unsorted timestamps
- rab_fast   : the shipped fast path (`rab_tables`): positional blocks from the skewed table,
               time buckets by integer compares against the edge table, a branch per far tile on
               its edge count (0, <= 2, <= 4); diagonal tiles (their time weights read from the
               band) and many-edge tiles in separate loops

(the rab-gradient kernel, `triton_rab_grad`, exists with the bias only: its baseline is the
bias-free backward, dk/dv + dq; the "backward" summary adds the three kernels up) and the probes
rab_fast_e0/e1/e2/e4: the fast path with its far-tile loop compiled for tiles
spanning exactly 0/1/2/4 edges (`PROBE_EDGES`, never launched). The shipped loop holds all the
edge-count branches, so its static size is not what one tile executes; a probe's loop is.

Per kernel: registers and spill bytes (`ptxas -v` on the PTX, with the ptxas and options Triton uses for the target),
whether ptxas serialized its wgmma (sm_90: its info C7515; every MMA then waits for the one before
it) and the MMA waits in the far-tile loop (1-2 a tile when they overlap), shared
memory (Triton's metadata), and in the far-tile main loop (located by its backward branch in the
SASS from `cuobjdump -sass`): SASS instructions per logit (loop instructions x threads / tile
logits; for the rab-gradient kernel, whose tile loop holds a loop over the heads, per logit and
head at H = 4: (tile loop + 3 more passes of the head loop) / 4), 4-byte global loads per logit
(per-element gathers; a tile load is 16-byte vectors), whether the loop is software-pipelined (asynchronous global->shared copies in it), and the
spill accesses (LDL/STL) in the hottest loop (the far-tile loop, or the rab-gradient kernel's
loop over heads): spilled values reloaded there cost per logit, elsewhere per tile or program.
For the forward and dk/dv, also the SASS instructions per logit of a diagonal tile (the tiles
crossing the causal diagonal, 5-10% of them at N 4096, most at short lengths), an edge loop inside
run for the DIAGONAL_EDGES edges such a tile spans on the attention benchmark's inputs.
And the registers live at the peak (`nvdisasm --print-life-ranges`) inside the far-tile loop and
elsewhere (the diagonal and many-edge loops, prologue, epilogue): which part of the kernel sets its
register count. These peaks come from the code ptxas scheduled with the registers it chose, so
they are not a minimum: capped (--maxnreg), ptxas schedules for fewer. And the warps an SM keeps
resident (`cubin_inspect.resident_warps`: its blocks that fit by registers and shared memory):
the occupancy that the issue's register and shared-memory targets stand for.
With --all-configs every tuning config is measured too (the autotuner may pick any): per config,
the fast path against the bias-free kernel at that config, and whether it meets the absolute
targets (no spills, <= 168 registers, pipelined, no wgmma serialized).
With --maxnreg N every kernel is compiled with its registers capped at N per thread (PTX
`.maxnreg`, what a tuning config's `maxnreg` does): the spill bytes then say how far each kernel is
from fitting N registers (results in kernel_static_maxnreg<N>.json unless --out says otherwise).
These are proxies, not timings: only a GPU decides the speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cubin_inspect import (  # noqa: E402  (after the path set-up)
    SM_LIMITS, live_registers, local_accesses, loops, pipelined, ptxas_usage, registers_for_warps, resident_warps,
    sass_instructions, scalar_global_loads,
)

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "kernel_static.json"
KERNELS = ("fwd", "dkdv", "dq", "rabgrad")
# The benchmark's head count: the rab-gradient kernel's reductions are shared by this many heads.
HEADS = 4
VARIANTS = ("norab", "rab_exact", "rab_fast", "rab_fast_e0", "rab_fast_e1", "rab_fast_e2", "rab_fast_e4")
# The probes: the far-tile loop compiled for tiles spanning exactly this many time-bucket edges.
_PROBE_EDGES = {"rab_fast_e0": 0, "rab_fast_e1": 1, "rab_fast_e2": 2, "rab_fast_e4": 4}
HEAD_DIM = 64
NUM_BUCKETS = 128
# A 4-byte global load per logit or more in the main loop is a per-element gather.
_ALIGNED_INTS = ("t_stride", "skew_stride", "max_seq_len", "tune_len", "num_buckets")
@dataclasses.dataclass(frozen=True)
class KernelCost:
    kernel: str
    variant: str
    arch: int
    config: dict[str, int]
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int
    loop_instructions: int
    logits_per_thread: float
    instructions_per_logit: float
    diagonal_instructions_per_logit: float | None  # `diagonal_tile_instructions` per logit (fwd, dk/dv)
    scalar_loads_per_logit: float
    pipelined: bool
    wgmma_serialized: str | None  # ptxas's code and reason when it serialized the kernel's wgmma (sm_90)
    loop_mma_waits: int  # waits for MMAs in the far-tile loop (sm_90 WARPGROUP.DEPBAR): 1-2 unless serialized
    hot_loop_local_accesses: int
    resident_warps: int  # warps an SM holds at once (`cubin_inspect.resident_warps`)
    live_registers_far_loop: int | None  # None where nvdisasm cannot trace them (its sm_80 cubins)
    live_registers_elsewhere: int | None
    compile_s: float


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, nargs="+", default=[90, 80], choices=sorted(SM_LIMITS),
                   help="compute capabilities (90 = H100/H200, 80 = A100: those the occupancy model knows)")
    p.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--maxnreg", type=int, default=None,
                   help="cap the registers per thread (PTX .maxnreg, as a tuning config's maxnreg)")
    p.add_argument("--all-configs", action="store_true",
                   help="also measure every tuning config (sm_90+, the selected variants but the per-logit "
                        "path) and say which meet the absolute targets (`tuning_configs` in the JSON; minutes more)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON results (default {DEFAULT_OUT.relative_to(ROOT)}, or kernel_static_maxnreg<N>.json "
                        "beside it with --maxnreg)")
    args = p.parse_args()
    if args.maxnreg is not None and not 24 <= args.maxnreg <= 255:
        p.error(f"--maxnreg must be between 24 and 255 (registers per thread), got {args.maxnreg}")
    if args.maxnreg is not None and args.all_configs:
        p.error("--all-configs measures the tuning configs as the autotuner launches them (some carry their own "
                "maxnreg): run it without --maxnreg")
    if args.out is None:
        args.out = DEFAULT_OUT if args.maxnreg is None else DEFAULT_OUT.with_name(f"kernel_static_maxnreg{args.maxnreg}.json")
    return args


def tuning_configs(kernel: str) -> list[dict[str, int]]:
    """The kernel's autotuning candidates (the first is the one measured by default)."""
    from kernels.hstu_attention import triton_bwd, triton_fwd, triton_rab_grad

    configs = {"fwd": triton_fwd.FWD_CONFIGS, "dkdv": triton_bwd.DKDV_CONFIGS, "dq": triton_bwd.DQ_CONFIGS,
               "rabgrad": triton_rab_grad.RAB_GRAD_CONFIGS}[kernel]
    return [dict(c) for c in configs]


def _kernel_spec(kernel: str) -> tuple[Any, dict[str, str]]:
    """(jit function, pointer signature)."""
    from kernels.hstu_attention import triton_bwd, triton_fwd, triton_rab_grad

    bf16, f32, i64, i32 = "*bf16", "*fp32", "*i64", "*i32"
    common = {"SEQ_OFFSETS": i64, "TS": i64, "REQ_TS": i64, "POS_W": f32, "TS_W": f32, "THR": f32,
              "EDGES": i32, "FIRST_Q": i32, "BAND": f32, "POS_SKEW": f32}
    if kernel == "fwd":
        return triton_fwd._hstu_fwd_kernel, {"Q": bf16, "K": bf16, "V": bf16, "OUT": bf16, **common}
    if kernel == "dkdv":
        return triton_bwd._dkdv_kernel, {n: bf16 for n in ("Q", "K", "V", "DO", "DK", "DV")} | common
    if kernel == "dq":
        return triton_bwd._dq_kernel, {n: bf16 for n in ("Q", "K", "V", "DO", "DQ")} | common
    ptrs = {n: bf16 for n in ("Q", "K", "V", "DO")} | common | {"DPOS_PART": f32, "DTS_PART": f32}
    return triton_rab_grad._rab_grad_kernel, ptrs


def _tile_shape(kernel: str, config: dict[str, int]) -> tuple[int, int]:
    if kernel == "fwd":
        return config["BLOCK_M"], config["BLOCK_N"]
    if kernel == "dkdv":
        return config["BLOCK_N"], config["BLOCK_M"]
    return config["BLOCK"], config["BLOCK"]


def compile_kernel(kernel: str, variant: str, arch: int, maxnreg: int | None = None,
                   config: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels.hstu_attention.rab_tables import FAR_TILE_MAX_EDGES

    fn, ptrs = _kernel_spec(kernel)
    config = dict(config) if config is not None else tuning_configs(kernel)[0]
    has_rab = variant != "norab"
    constexprs: dict[str, Any] = dict(
        D_QK=HEAD_DIM, D_V=HEAD_DIM, NORM_MAX_LEN=True, HAS_POS=has_rab, HAS_TS=has_rab,
        FAST_RAB=variant.startswith("rab_fast"), PROBE_EDGES=_PROBE_EDGES.get(variant, -1),
        MAX_EDGES=FAR_TILE_MAX_EDGES, EDGE_PAD=NUM_BUCKETS,
        HIST_PAD=triton.next_power_of_2(NUM_BUCKETS + 1), BLOCK_DQK=HEAD_DIM, BLOCK_DV=HEAD_DIM,
        DOT_PRECISION="tf32", FAST_MATH=True,
        **{k: v for k, v in config.items() if k not in ("num_warps", "num_stages", "maxnreg")},
    )
    signature = {}
    for name in fn.arg_names:
        if name in ptrs:
            signature[name] = ptrs[name]
        elif name in constexprs:
            signature[name] = "constexpr"
        elif name == "alpha":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    unknown = [n for n in constexprs if n not in fn.arg_names]
    for name in unknown:
        constexprs.pop(name)
    # What a launch specializes: 16-byte aligned tensors, and the integers that are multiples of
    # 16 at the benchmark's shape (N 4096, T 32768, H 4, D 64, 128 buckets).
    aligned = [n for n in fn.arg_names if n in ptrs or n.startswith("stride_") or n in _ALIGNED_INTS]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()},
                    attrs=attrs)
    # FP fusion pinned on: Triton 3.10 changes its default (and `_TRITON_PTXAS_OPTIONS` assumes it).
    options = dict(num_warps=config["num_warps"], num_stages=config["num_stages"], enable_fp_fusion=True)
    if maxnreg is not None:  # --maxnreg overrides a tuning config's own cap
        config["maxnreg"] = maxnreg
    if config.get("maxnreg") is not None:
        options["maxnreg"] = config["maxnreg"]
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options), config


def far_tile_loop(kernel: str, instructions: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The instructions of the loop over far tiles: the forward's, dq's and the rab-gradient
    kernel's first key loop, the dk/dv kernel's second query loop (its first one walks the blocks
    crossing the diagonal)."""
    found = loops(instructions)
    which = 1 if kernel == "dkdv" else 0
    if len(found) <= which:
        raise RuntimeError(f"{kernel}: expected at least {which + 1} loops in the SASS, found {len(found)}")
    start, end = found[which]
    return [ins for ins in instructions if start <= ins[0] <= end]


# Edges a diagonal tile spans on the benchmark's inputs (benchmarks/attention.py at N 4096, the
# forward's 128x64 tiles: 38.4 on average, every bucket from 0 up to the tile's widest gap).
DIAGONAL_EDGES = 38


def diagonal_tile_instructions(kernel: str, config: dict[str, int], instructions: list[tuple[int, str, str]]
                               ) -> int | None:
    """SASS instructions a thread executes for one tile crossing the causal diagonal, a loop over
    its edges (where it has one) run DIAGONAL_EDGES times: the forward's second tile loop, the
    dk/dv kernel's first. None for dq and a forward with square tiles (one diagonal tile, which
    the compiler need not lay out as a loop) and the rab-gradient kernel."""
    if kernel not in ("fwd", "dkdv") or (kernel == "fwd" and config["BLOCK_M"] == config["BLOCK_N"]):
        return None
    found = loops(instructions)
    which = 1 if kernel == "fwd" else 0
    if len(found) <= which:
        raise RuntimeError(f"{kernel}: expected at least {which + 1} loops in the SASS, found {len(found)}")
    start, end = found[which]
    executed = sum(start <= addr <= end for addr, _, _ in instructions)
    for inner_start, inner_end in loops(instructions, within=(start, end)):
        executed += (DIAGONAL_EDGES - 1) * sum(inner_start <= addr <= inner_end for addr, _, _ in instructions)
    return executed


def head_loop(loop: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The rab-gradient kernel's loop over the heads, inside its far-tile loop `loop` (the one
    nested loop holding the tile's dots)."""
    inner = [span for span in loops(loop, within=(loop[0][0], loop[-1][0]))
             if any(op.startswith(("HGMMA", "HMMA")) for a, op, _ in loop if span[0] <= a <= span[1])]
    if len(inner) != 1:
        raise RuntimeError(f"rabgrad: expected one loop over the heads with dots in the tile loop, found {len(inner)}")
    start, end = inner[0]
    return [ins for ins in loop if start <= ins[0] <= end]


def measure(kernel: str, variant: str, arch: int, maxnreg: int | None = None,
            config: dict[str, int] | None = None) -> KernelCost:
    start = time.perf_counter()
    compiled, config = compile_kernel(kernel, variant, arch, maxnreg, config=config)
    compile_s = time.perf_counter() - start
    regs, spill_st, spill_ld, serialized = ptxas_usage(compiled.asm["ptx"], arch, triton_cubin=compiled.asm["cubin"])
    instructions = sass_instructions(compiled.asm["cubin"])
    loop = far_tile_loop(kernel, instructions)
    diagonal = diagonal_tile_instructions(kernel, config, instructions)
    live = live_registers(compiled.asm["cubin"])
    if live is not None:
        live_in_loop = max(n for addr, n in live.items() if loop[0][0] <= addr <= loop[-1][0])
        live_elsewhere = max(n for addr, n in live.items() if not loop[0][0] <= addr <= loop[-1][0])
    else:
        live_in_loop = live_elsewhere = None
    rows, cols = _tile_shape(kernel, config)
    logits_per_thread = rows * cols / (32 * config["num_warps"])
    # Instructions and loads a tile of logits costs; the rab-gradient kernel runs its head loop
    # HEADS times a tile, and its costs are per logit and head.
    executed, loads, passes, hot = len(loop), scalar_global_loads(loop), 1, loop
    if kernel == "rabgrad":
        # Its far-tile loop holds the loop over heads and, on the fast path, no other: the
        # diagonal tiles' loop (which the compiler could lay out first) also loops over edges.
        if variant.startswith("rab_fast") and len(loops(loop, within=(loop[0][0], loop[-1][0]))) != 1:
            raise RuntimeError(f"rabgrad {variant}: the first loop is not the far-tile loop")
        hot = head_loop(loop)
        executed += (HEADS - 1) * len(hot)
        loads += (HEADS - 1) * scalar_global_loads(hot)
        passes = HEADS
    return KernelCost(
        kernel=kernel, variant=variant, arch=arch, config=config, registers=regs, spill_store_bytes=spill_st,
        spill_load_bytes=spill_ld, shared_bytes=int(compiled.metadata.shared), loop_instructions=len(loop),
        logits_per_thread=logits_per_thread,
        instructions_per_logit=round(executed / (passes * logits_per_thread), 2),
        diagonal_instructions_per_logit=round(diagonal / logits_per_thread, 2) if diagonal is not None else None,
        scalar_loads_per_logit=round(loads / (passes * logits_per_thread), 3),
        pipelined=pipelined(loop), wgmma_serialized=serialized,
        loop_mma_waits=sum(1 for _, op, _ in loop if op.startswith("WARPGROUP.DEPBAR")),
        hot_loop_local_accesses=local_accesses(hot),
        resident_warps=resident_warps(arch, regs, int(compiled.metadata.shared), config["num_warps"]),
        live_registers_far_loop=live_in_loop, live_registers_elsewhere=live_elsewhere, compile_s=round(compile_s, 1),
    )


def summary(costs: list[KernelCost]) -> dict[str, Any]:
    """Per (arch, kernel): the fast path against the bias-free kernel, the issue's static targets.

    The rab-gradient kernel's shared memory is compared with the bias-free dq kernel's (it has
    no bias-free variant), and "backward" per (arch) sums the three backward kernels'
    instructions per logit against dk/dv + dq without the bias.
    """
    out: dict[str, Any] = {}
    by = {(c.arch, c.kernel, c.variant): c for c in costs}
    for (arch, kernel, variant), cost in by.items():
        base_kernel = "dq" if kernel == "rabgrad" else kernel
        if variant != "rab_fast" or (arch, base_kernel, "norab") not in by:
            continue
        base = by[(arch, base_kernel, "norab")]
        exact = by.get((arch, kernel, "rab_exact"))
        probes = {v: by[(arch, kernel, v)] for v in _PROBE_EDGES if (arch, kernel, v) in by}
        entry = {
            "spills_zero": cost.spill_store_bytes == 0 and cost.spill_load_bytes == 0,
            "registers_at_most_168": cost.registers <= 168,
            "shared_within_10pct_of_norab": cost.shared_bytes <= 1.10 * base.shared_bytes,
            "pipelined": cost.pipelined,
            # The occupancy the register and shared-memory targets stand for, and the registers the
            # fast path would need to match the bias-free kernel's (None: its shared memory bars it).
            "resident_warps": {"rab_fast": cost.resident_warps, "norab": base.resident_warps},
            "registers_for_norab_occupancy": registers_for_warps(arch, base.resident_warps, cost.shared_bytes,
                                                                 cost.config["num_warps"]),
        }
        if arch >= 90:  # wgmma exists from sm_90 on
            entry["wgmma_not_serialized"] = cost.wgmma_serialized is None
        if kernel != "rabgrad":
            entry |= {
                "exact_instructions_vs_norab": (round(exact.instructions_per_logit / base.instructions_per_logit, 2)
                                                if exact else None),
                "far_tile_instructions_vs_norab": {
                    v: round(p.instructions_per_logit / base.instructions_per_logit, 2) for v, p in probes.items()},
            }
            if cost.diagonal_instructions_per_logit is not None and base.diagonal_instructions_per_logit:
                entry["diagonal_instructions_vs_norab"] = round(
                    cost.diagonal_instructions_per_logit / base.diagonal_instructions_per_logit, 2)
        entry["far_tile_scalar_loads_per_logit"] = {v: p.scalar_loads_per_logit for v, p in probes.items()}
        out[f"sm_{arch}/{kernel}"] = entry
    for arch in sorted({c.arch for c in costs}):
        parts = ("dkdv", "dq", "rabgrad")
        if not all((arch, k, v) in by for k in parts for v in ("rab_fast", "rab_exact")) or \
                not all((arch, k, "norab") in by for k in parts[:2]):
            continue
        base = sum(by[(arch, k, "norab")].instructions_per_logit for k in parts[:2])
        ratios = {v: round(sum(by[(arch, k, v)].instructions_per_logit for k in parts) / base, 2)
                  for v in ("rab_exact", *_PROBE_EDGES) if all((arch, k, v) in by for k in parts)}
        out[f"sm_{arch}/backward"] = {
            "exact_instructions_vs_norab": ratios.pop("rab_exact"),
            "far_tile_instructions_vs_norab": ratios,
        }
    return out


def _live_text(c: KernelCost) -> str:
    return "-" if c.live_registers_far_loop is None else f"{c.live_registers_far_loop}/{c.live_registers_elsewhere}"


def _waits_text(c: KernelCost) -> str:
    """MMA waits in the far-tile loop, "serial" when ptxas serialized the kernel's wgmma."""
    if c.arch < 90:
        return "-"
    return f"{c.loop_mma_waits}{' serial' if c.wgmma_serialized else ''}"


def _diagonal_text(c: KernelCost) -> str:
    return "-" if c.diagonal_instructions_per_logit is None else f"{c.diagonal_instructions_per_logit:.2f}"


def print_table(costs: list[KernelCost]) -> None:
    head = (f"{'arch':>5} {'kernel':>7} {'variant':>13} {'regs':>4} {'spill B':>8} {'smem KB':>7} "
            f"{'loop ins':>8} {'ins/logit':>9} {'diag ins/logit':>14} {'4B ld/logit':>11} {'pipelined':>9} "
            f"{'live loop/else':>14} {'mma waits':>9} {'warps/SM':>8}")
    print(head)
    print("-" * len(head))
    for c in costs:
        print(f"{c.arch:>5} {c.kernel:>7} {c.variant:>13} {c.registers:>4} {c.spill_store_bytes + c.spill_load_bytes:>8} "
              f"{c.shared_bytes / 1024:>7.1f} {c.loop_instructions:>8} {c.instructions_per_logit:>9.2f} "
              f"{_diagonal_text(c):>14} {c.scalar_loads_per_logit:>11.3f} {str(c.pipelined):>9} "
              f"{_live_text(c):>14} {_waits_text(c):>9} {c.resident_warps:>8}")


def band_kernel_usage(arch: int) -> dict[str, int]:
    """Registers, spill bytes and shared memory of the kernel that writes the diagonal band
    (`rab_tables._diagonal_bias_kernel`, once per call, outside the attention kernels), compiled
    as launched for 128 time buckets with positional weights."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels.hstu_attention import rab_tables

    fn = rab_tables._diagonal_bias_kernel
    thresholds = triton.next_power_of_2(NUM_BUCKETS + 1)
    constexprs = dict(HAS_POS=True, SEARCH_STEPS=thresholds.bit_length() - 1, BLOCK_ROWS=rab_tables._BAND_BLOCK_ROWS,
                      WIDTH=rab_tables.BAND_WIDTH.value)
    pointers = {"BAND": "*fp32", "TS": "*i64", "T_QUERY": "*i64", "SEQ_ID": "*i64", "STARTS": "*i64", "THR": "*i64",
                "TS_W": "*fp32", "POS_W": "*fp32"}
    signature = {n: pointers.get(n, "constexpr" if n in constexprs else "i32") for n in fn.arg_names}
    src = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=4, enable_fp_fusion=True))
    regs, spill_st, spill_ld, _ = ptxas_usage(compiled.asm["ptx"], arch, triton_cubin=compiled.asm["cubin"])
    return dict(arch=arch, registers=regs, spill_bytes=spill_st + spill_ld, shared_bytes=int(compiled.metadata.shared))


# The per-config pass skips the per-logit path: it is the fallback for unsorted timestamps, tuned
# over the same configs, and the main table shows its cost at the first one.
CONFIG_PASS_VARIANTS = tuple(v for v in VARIANTS if v != "rab_exact")


def costs_by_config(archs: list[int], kernels: list[str], variants: list[str],
                    known: Sequence[KernelCost] = ()) -> list[KernelCost]:
    """Every tuning config of each kernel in `variants` (the per-logit path aside), compiled for each
    sm_90+ arch: the autotuner on a GPU may pick any of them, so each is measured as the first
    one is in the main table (`known` costs, that table's, are reused rather than measured again).
    The rab-gradient kernel's bias-free twin is the dq kernel at its config, measured with "norab"
    among the variants."""
    wanted = [v for v in variants if v in CONFIG_PASS_VARIANTS]
    jobs: list[tuple[int, str, str, dict[str, int]]] = []
    for arch in (a for a in archs if a >= 90):
        for kernel in kernels:
            for config in tuning_configs(kernel):
                for variant in wanted:
                    job = (arch, "dq", variant, config) if kernel == "rabgrad" and variant == "norab" else \
                        (arch, kernel, variant, config)
                    if job not in jobs:
                        jobs.append(job)
    measured = {(c.arch, c.kernel, c.variant, tuple(sorted(c.config.items()))): c for c in known}
    return [measured.get((arch, kernel, variant, tuple(sorted(config.items()))))
            or measure(kernel, variant, arch, config=config) for arch, kernel, variant, config in jobs]


def config_verdicts(costs: list[KernelCost]) -> list[dict[str, Any]]:
    """Per (arch, kernel, tuning config) with the fast path measured: its static figures against the
    bias-free kernel at the same config (the rab-gradient kernel against the bias-free dq kernel's),
    and whether it meets the issue's absolute targets: no spills, at most 168 registers, a pipelined
    far loop, no wgmma serialized (by ptxas, in any variant measured at that config)."""
    key = lambda c: (c.arch, c.kernel, tuple(sorted(c.config.items())))  # noqa: E731
    by = {(*key(c), c.variant): c for c in costs}
    rows = []
    for (arch, kernel, config, variant), fast in by.items():
        if variant != "rab_fast":
            continue
        base = by.get((arch, "dq" if kernel == "rabgrad" else kernel, config, "norab"))
        variants = {v: c for (a, k, cfg, v), c in by.items() if (a, k, cfg) == (arch, kernel, config)}
        serialized = {v: c.wgmma_serialized for v, c in variants.items() if c.wgmma_serialized}
        if base is not None and base.wgmma_serialized:
            serialized["norab"] = base.wgmma_serialized
        spill = fast.spill_store_bytes + fast.spill_load_bytes
        rows.append(dict(
            arch=arch, kernel=kernel, config=fast.config, registers=fast.registers, spill_bytes=spill,
            shared_bytes=fast.shared_bytes, resident_warps=fast.resident_warps,
            norab=None if base is None else dict(registers=base.registers, shared_bytes=base.shared_bytes,
                                                 resident_warps=base.resident_warps,
                                                 instructions_per_logit=base.instructions_per_logit),
            far_tile_instructions_vs_norab=None if base is None else {
                v: round(c.instructions_per_logit / base.instructions_per_logit, 2)
                for v, c in variants.items() if v in _PROBE_EDGES},
            wgmma_serialized=serialized,
            meets_absolute_targets=spill == 0 and fast.registers <= 168 and fast.pipelined and not serialized,
        ))
    return rows


def print_config_table(rows: list[dict[str, Any]]) -> None:
    print("\nevery tuning config, fast path: the shipped kernel's registers and spills (every edge-count branch), the "
          "probes' far tiles; (x, /: against the bias-free kernel at the same config; for the rab gradient, which has "
          "none, the bias-free dq kernel's, for reference); targets: no spills, <= 168 registers, pipelined, "
          "not serialized")
    head = (f"{'arch':>5} {'kernel':>7} {'config':>21} {'regs':>4} {'spill B':>7} {'smem KB':>11} {'warps/SM':>8} "
            f"{'far tile e0 / e1 / e2':>21} {'serialized':>10} {'meets targets':>13}")
    print(head)
    print("-" * len(head))
    for r in rows:
        cfg = r["config"]
        tile = "x".join(str(cfg[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK") if k in cfg)
        name = f"{tile} w{cfg['num_warps']} s{cfg['num_stages']}" + (f" r{cfg['maxnreg']}" if cfg.get("maxnreg") else "")
        base = r["norab"]
        smem = f"{r['shared_bytes'] / 1024:.0f}" + (f" ({r['shared_bytes'] / base['shared_bytes']:.2f}x)" if base else "")
        warps = f"{r['resident_warps']}" + (f"/{base['resident_warps']}" if base else "")
        ratios = r["far_tile_instructions_vs_norab"]
        far = " / ".join(f"{ratios[v]:.2f}" for v in ("rab_fast_e0", "rab_fast_e1", "rab_fast_e2")
                         if ratios and v in ratios) or "-"
        print(f"{r['arch']:>5} {r['kernel']:>7} {name:>21} {r['registers']:>4} {r['spill_bytes']:>7} {smem:>11} "
              f"{warps:>8} {far:>21} {str(bool(r['wgmma_serialized'])):>10} {str(r['meets_absolute_targets']):>13}")


def run(archs: list[int], kernels: list[str], variants: list[str], maxnreg: int | None = None) -> dict[str, Any]:
    import triton

    # The rab-gradient kernel has no bias-free variant (the backward without a bias does not launch it).
    costs = [measure(k, v, a, maxnreg) for a in archs for k in kernels for v in variants
             if not (k == "rabgrad" and v == "norab")]
    if maxnreg is not None:
        print(f"registers capped at {maxnreg} per thread (.maxnreg)")
    print_table(costs)
    band = [band_kernel_usage(a) for a in archs]
    for usage in band:
        print(f"sm_{usage['arch']} band kernel: {usage['registers']} registers, {usage['spill_bytes']} spill bytes, "
              f"{usage['shared_bytes'] / 1024:.1f} KB shared")
    return {
        "triton": triton.__version__,
        "machine": platform.node(),
        "head_dim": HEAD_DIM,
        "dtype": "bfloat16",
        "num_time_buckets": NUM_BUCKETS,
        "maxnreg": maxnreg,
        "costs": [dataclasses.asdict(c) for c in costs],
        "band_kernel": band,
        "summary": summary(costs),
    }


def main() -> None:
    os.environ.pop("TRITON_INTERPRET", None)  # compiled code, not the interpreter
    args = parse_args()
    result = run(args.arch, args.kernels, args.variants, args.maxnreg)
    if args.all_configs:
        config_costs = costs_by_config(args.arch, args.kernels, args.variants,
                                       known=[KernelCost(**c) for c in result["costs"]])
        result["tuning_configs"] = config_verdicts(config_costs)
        result["tuning_config_costs"] = [dataclasses.asdict(c) for c in config_costs]
        print_config_table(result["tuning_configs"])
    print(json.dumps(result["summary"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
