"""benchmarks/kernel_static.py: the fast rab path keeps its static properties.

Compiles the forward, dk/dv, dq and rab-gradient kernels for sm_90 on this CPU-only machine (a
subprocess: the test session runs Triton under its interpreter, which cannot compile) and fails if
the fast rab path starts to spill (dk/dv and the rab-gradient kernel: in their hottest loops),
loses its software pipelining, gets its wgmma serialized by ptxas (any kernel, bias or not),
gathers a weight per logit in the far-tile loop again, its forward's and dq's far tiles inside one time bucket cost more than 4 instructions per logit over the bias-free
kernel's, or its diagonal tiles more than 1.6x the bias-free kernel's; and that `--all-configs`
measures every tuning candidate against its bias-free twin, none serialized, and the occupancy
model (`cubin_inspect.resident_warps`) gives the CUDA limits' answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fast_rab_compiles_without_spills_or_gathers_and_pipelined(tmp_path):
    out = tmp_path / "static.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernel_static.py"), "--arch", "90", "--kernels", "fwd", "dkdv",
         "dq", "rabgrad", "--variants", "norab", "rab_exact", "rab_fast", "rab_fast_e0", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    costs = {(c["kernel"], c["variant"]): c for c in json.loads(out.read_text())["costs"]}
    for kernel in ("fwd", "dkdv", "dq"):
        fast, exact, base = (costs[kernel, v] for v in ("rab_fast", "rab_exact", "norab"))
        if kernel == "dkdv":
            # Its wgmma unserialized (stop 30), dk/dv spills 80 bytes outside its far-tile loop
            # (none before, with every MMA waiting for the last): none in the loop.
            assert fast["spill_store_bytes"] + fast["spill_load_bytes"] <= 128, kernel
            assert fast["hot_loop_local_accesses"] == 0, kernel
        else:
            assert fast["spill_store_bytes"] == 0 and fast["spill_load_bytes"] == 0, kernel
        assert fast["pipelined"] and base["pipelined"], kernel
        # The per-logit path gathers weights and thresholds (4 loads of 4 bytes per logit); the fast
        # one loads the positional block as 16-byte vectors, and per edge one value per tile row and
        # two weights (the shipped loop holds every edge-count branch: under one load per logit).
        assert exact["scalar_loads_per_logit"] >= 2.0, kernel
        assert fast["scalar_loads_per_logit"] < 1.0, kernel
        assert costs[kernel, "rab_fast_e0"]["scalar_loads_per_logit"] <= 0.1, kernel
        assert fast["instructions_per_logit"] < 0.6 * exact["instructions_per_logit"], kernel
    # A far tile inside one time bucket: the positional block rides on the scaling's FFMA and the
    # time weight is one add: the bias costs at most 4 instructions per logit over the bias-free
    # kernel's (3.5 at this commit, 5.5 before the fast path's rewrite of stop 23).
    e0, base = costs["fwd", "rab_fast_e0"], costs["fwd", "norab"]
    assert e0["instructions_per_logit"] - base["instructions_per_logit"] <= 4.0
    # The diagonal tiles read their bias from the band, one block whatever the edges they span:
    # within 1.6x of the bias-free kernels' diagonal tiles (forward 1.38x, dk/dv 1.28x at this
    # commit; a loop over the 38 edges they span on the benchmark's inputs cost ~10x and ~6.5x).
    for kernel in ("fwd", "dkdv"):
        fast, base = costs[kernel, "rab_fast"], costs[kernel, "norab"]
        assert fast["diagonal_instructions_per_logit"] <= 1.6 * base["diagonal_instructions_per_logit"], kernel
    # The edge loops carry the dot's own layout (a loop-carried tile of their own took 255 in the
    # far loop). The kernel-wide count is set outside it since the band (250: the band's block in
    # the diagonal and redo loops; one 8-warp block per SM either way, as at 212 before).
    assert costs["fwd", "rab_fast"]["live_registers_far_loop"] < 220
    # dq no longer reduces the weight gradients per head: its bias-free far tiles cost what the
    # forward's do over their kernel (3.4 instructions per logit at this commit, 20.7 with the
    # reductions inside).
    e0, base = costs["dq", "rab_fast_e0"], costs["dq", "norab"]
    assert e0["instructions_per_logit"] - base["instructions_per_logit"] <= 4.0
    # The rab-gradient kernel: one loop over heads per tile, pipelined, no spill reloads in it, and
    # per logit and head (H = 4) under 1.6x the bias-free dq kernel's cost at a bias-free far tile
    # (1.41x at stop 29, 1.56x since the bias-free dq kernel, its wgmma no longer serialized, costs
    # 10.1 instructions per logit rather than 11.1).
    grad = costs["rabgrad", "rab_fast"]
    assert grad["pipelined"] and grad["hot_loop_local_accesses"] == 0
    assert grad["scalar_loads_per_logit"] < 0.5
    assert costs["rabgrad", "rab_fast_e0"]["instructions_per_logit"] <= 1.6 * base["instructions_per_logit"]
    # Where the registers are live (nvdisasm's life ranges, read from a 255-register kernel too):
    # the peaks lie within what ptxas allocated, and the per-logit path's far loop (its bias
    # arithmetic per logit) needs more of them than the bias-free loop.
    for cost in costs.values():
        assert 0 < cost["live_registers_far_loop"] <= cost["registers"], cost
        assert 0 < cost["live_registers_elsewhere"] <= cost["registers"], cost
    assert costs["fwd", "rab_exact"]["registers"] == 255
    assert costs["fwd", "rab_exact"]["live_registers_far_loop"] > costs["fwd", "norab"]["live_registers_far_loop"]
    # ptxas serializes every wgmma of a kernel for one spot it cannot pipeline (info C7515): dq,
    # bias or not, and dk/dv with the bias were serialized until stop 30 (a zero-initialized
    # accumulator reaching the wait of a loop that ran no iteration), so each of their MMAs
    # waited for the one before, 12 and 16 waits per far tile instead of 2.
    for (kernel, variant), cost in costs.items():
        assert cost["wgmma_serialized"] is None, (kernel, variant, cost["wgmma_serialized"])
        assert cost["loop_mma_waits"] <= 2, (kernel, variant, cost["loop_mma_waits"])
    assert "fwd" in done.stdout and "rab_fast" in done.stdout  # the table is printed
    # The band's builder compiles for the GPU (the interpreter accepted a reassigned constexpr
    # that the compiler refuses) and does not spill.
    [band] = json.loads(out.read_text())["band_kernel"]
    assert band["arch"] == 90 and 0 < band["registers"] <= 255 and band["spill_bytes"] == 0


def _static(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_static.py"), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=900)


def test_maxnreg_caps_the_registers_and_is_recorded(tmp_path):
    # The bias-free dq kernel takes 160 registers on sm_90 at this commit: capped at 128 it fits
    # them (spilling or not), and the cap is in the record.
    out = tmp_path / "capped.json"
    done = _static("--arch", "90", "--kernels", "dq", "--variants", "norab", "--maxnreg", "128", "--out", str(out),
                   tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    [cost] = result["costs"]
    assert result["maxnreg"] == 128 and cost["config"]["maxnreg"] == 128 and cost["registers"] <= 128
    assert "capped at 128" in done.stdout
    bad = _static("--maxnreg", "300", tmp_path=tmp_path)
    assert bad.returncode == 2 and "error: --maxnreg must be between 24 and 255" in bad.stderr


def _cubin_inspect():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cubin_inspect
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return cubin_inspect


@pytest.mark.parametrize(("arch", "registers", "shared_kb", "num_warps", "warps"), [
    # 255 registers: 8,192 a warp (256-register units), 8 warps of 65,536; 80 KB fits twice anyway.
    (90, 255, 80, 4, 8),
    # 128 registers, 8-warp blocks: 4,096 a warp, 16 warps by registers; 48 KB (+1 reserved) 4 times.
    (90, 128, 48, 8, 16),
    # 168 registers: 5,376 a warp, 12 warps by registers, but 80 KB + 1 fits only twice in 228 KB.
    (90, 168, 80, 4, 8),
    (90, 167, 48, 4, 12),
    # sm_80 has 164 KB a SM: 81 KB + 1 reserved fits twice, 82 KB + 1 once.
    (80, 128, 81, 4, 8),
    (80, 128, 82, 4, 4),
    # Few registers and no shared memory: the 64-warp limit, then the 32-block limit.
    (90, 32, 0, 8, 64),
    (90, 32, 0, 1, 32),
])
def test_resident_warps_follow_the_sm_limits(arch, registers, shared_kb, num_warps, warps):
    assert _cubin_inspect().resident_warps(arch, registers, shared_kb * 1024, num_warps) == warps


@pytest.mark.slow
def test_all_configs_measures_every_tuning_config_against_its_bias_free_twin(tmp_path):
    # The autotuner may pick any candidate on a GPU: each is measured, its fast path against the
    # bias-free kernel at the same config, and none may have its wgmma serialized (a register cap,
    # as some candidates carry, is what makes ptxas serialize for want of registers: C7512).
    out = tmp_path / "configs.json"
    done = _static("--arch", "90", "--kernels", "fwd", "dkdv", "dq", "rabgrad", "--variants", "norab", "rab_fast",
                   "--all-configs", "--out", str(out), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows, costs = result["tuning_configs"], result["tuning_config_costs"]
    configs = _gpu_tuning_configs()
    assert {k: [r["config"] for r in rows if r["kernel"] == k] for k in configs} == configs
    for row in rows:
        twin_kernel = "dq" if row["kernel"] == "rabgrad" else row["kernel"]
        [twin] = [c for c in costs if (c["kernel"], c["variant"], c["config"]) == (twin_kernel, "norab", row["config"])]
        [fast] = [c for c in costs if (c["kernel"], c["variant"], c["config"]) == (row["kernel"], "rab_fast", row["config"])]
        assert row["norab"]["registers"] == twin["registers"] and row["norab"]["shared_bytes"] == twin["shared_bytes"]
        assert row["registers"] == fast["registers"] and row["resident_warps"] == fast["resident_warps"]
        assert row["wgmma_serialized"] == {}, row
        assert row["meets_absolute_targets"] == (row["spill_bytes"] == 0 and row["registers"] <= 168
                                                 and fast["pipelined"])
        if row["kernel"] != "rabgrad":  # its twin is another kernel, for reference
            assert 0 < row["resident_warps"] <= twin["resident_warps"], row  # the bias never adds occupancy
    # The forward's 64 x 32 candidate meets the register and spill targets (167 registers at stop 31).
    assert any(r["meets_absolute_targets"] for r in rows if r["kernel"] == "fwd")
    assert "every tuning config" in done.stdout
    both = _static("--all-configs", "--maxnreg", "168", tmp_path=tmp_path)
    assert both.returncode == 2 and "error: --all-configs measures the tuning configs" in both.stderr
    arch = _static("--arch", "89", tmp_path=tmp_path)
    assert arch.returncode == 2 and "invalid choice: 89" in arch.stderr


def _gpu_tuning_configs() -> dict[str, list[dict[str, int]]]:
    """Each kernel's autotuning candidates as on a GPU (this session's interpreter has its own)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json; from kernels.hstu_attention import triton_bwd as b, triton_fwd as f, triton_rab_grad as g; "
            "print(json.dumps({'fwd': f.FWD_CONFIGS, 'dkdv': b.DKDV_CONFIGS, 'dq': b.DQ_CONFIGS, "
            "'rabgrad': g.RAB_GRAD_CONFIGS}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(done.stdout)


def test_registers_for_warps_inverts_the_occupancy_model():
    inspect = _cubin_inspect()
    # The fast forward (80 KB, 8-warp blocks) matches the bias-free one's 16 warps at 128 registers;
    # dq's fast kernel (72 KB) cannot keep 4 blocks of 4 warps whatever its registers: 4 x 73 KB > 228.
    assert inspect.registers_for_warps(90, 16, 80 * 1024, 8) == 128
    assert inspect.resident_warps(90, 129, 80 * 1024, 8) == 8
    assert inspect.registers_for_warps(90, 16, 72 * 1024, 4) is None
    assert inspect.registers_for_warps(90, 12, 72 * 1024, 4) == 168


_PTX = """.version 8.0
.target sm_80
.address_size 64
.file 1 "{source}"
.visible .entry store_constant(.param .u64 out)
{{
  .reg .b32 %r<2>;
  .reg .b64 %rd<3>;
  .loc 1 1 0
  ld.param.u64 %rd1, [out];
  cvta.to.global.u64 %rd2, %rd1;
  mov.u32 %r1, {value};
  st.global.u32 [%rd2], %r1;
  ret;
}}
"""


def test_ptxas_check_compares_code_not_the_source_files_recorded_beside_it(tmp_path):
    # With line info ptxas writes each source file's size and time into the cubin as it finds them
    # on disk: after an edit elsewhere in a kernel's file, Triton's cached cubin differs from a fresh
    # assembly of its PTX in those bytes only, and the benchmark refused to run (stop 31).
    inspect = _cubin_inspect()
    source = tmp_path / "kernel_source.py"
    source.write_text("x = 1\n")
    ptx = _PTX.format(source=source, value=7)
    cached, _ = inspect.assemble(ptx, 80)
    source.write_text("x = 1\n# an edit outside the kernel\n")
    fresh, _ = inspect.assemble(ptx, 80)
    assert fresh != cached  # the line table moved...
    registers, spill_stores, spill_loads, serialized = inspect.ptxas_usage(ptx, 80, triton_cubin=cached)  # ...not the code
    assert 0 < registers <= 255 and (spill_stores, spill_loads, serialized) == (0, 0, None)
    other, _ = inspect.assemble(_PTX.format(source=source, value=8), 80)
    with pytest.raises(RuntimeError, match="did not assemble the code Triton did"):
        inspect.ptxas_usage(ptx, 80, triton_cubin=other)
