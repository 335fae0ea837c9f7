"""Grid size guard and streaming plans (issue 13, item 7).

A spec is counted before it is expanded: above `MAX_RUNS` runs, `sweep plan` and `sweep launch`
refuse at once unless given `--allow-large`, and `sweep plan` of an allowed large grid streams the
runs (count, FLOPs, budget, head and tail rows) instead of holding every planned run.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from gr_scaling.cli import main
from sweeps.plan import format_plan, plan_sweep
from sweeps.spec import load_spec, spec_from_dict


def summarize_plan(spec, **kwargs):  # type: ignore[no-untyped-def]
    from sweeps.plan import summarize_plan as stream  # new in issue 13; imported here so the CLI tests run on older code

    return stream(spec, **kwargs)


def max_runs() -> int:
    from sweeps.spec import MAX_RUNS

    return MAX_RUNS

BASE = {
    "data": {"num_items": 200, "num_clusters": 8, "min_events": 6, "max_events": 40, "num_users": 60},
    "model": {"max_seq_len": 24},
    "train": {"epochs": 1, "num_negatives": 16},
}


def _toml_list(values: list) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def _million_run_spec(tmp_path: Path) -> Path:
    path = tmp_path / "huge.toml"
    path.write_text(
        '[sweep]\nname = "huge"\n[axes]\n'
        f"depth = {_toml_list(list(range(1, 11)))}\n"
        f"width = {_toml_list([8 * (i + 1) for i in range(10)])}\n"
        f"seed = {_toml_list(list(range(100)))}\n"
        f"lr = {_toml_list([1e-4 * (i + 1) for i in range(100)])}\n"
    )
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_a_million_run_grid_is_refused_in_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    spec = _million_run_spec(tmp_path)
    out = tmp_path / "sweep"
    started = time.perf_counter()
    line = _one_error_line(capsys, ["sweep", command, str(spec), *(["--out", str(out)] if command == "launch" else [])])
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"refusal took {elapsed:.1f} s"
    assert f"{spec}: the spec describes 1,000,000 runs" in line
    assert "depth 10 x width 10 x seed 100 x lr 100" in line and f"{max_runs():,}" in line and "--allow-large" in line
    assert not out.exists()  # nothing created for a refused launch


def test_the_limit_counts_design_runs_and_is_checked_before_expansion(tmp_path: Path) -> None:
    raw = {"axes": {"width": [16, 32]}, "base": BASE, "design": {"kind": "isoflop", "budgets": [2e9, 4e9, 8e9]}}
    spec = spec_from_dict(raw, source="iso.toml")
    assert spec.num_runs == 6
    assert len(plan_sweep(spec, max_runs=6).runs) + len(plan_sweep(spec, max_runs=6).skipped) == 6
    with pytest.raises(ValueError, match=r"iso.toml: the spec describes 6 runs \(axes width 2 x 3 design.budgets\)"):
        plan_sweep(spec, max_runs=5)
    with pytest.raises(ValueError, match="describes 6 runs"):
        summarize_plan(spec, max_runs=5)
    ladder = spec_from_dict({**raw, "design": {"kind": "ladder", "multipliers": [1, 2]}}, source="l.toml")
    assert ladder.num_runs == 4
    # Loading with a limit counts the raw axes first: an oversized spec is refused before its
    # values are validated one by one (here a bad width would otherwise be the error).
    path = tmp_path / "s.toml"
    path.write_text("[axes]\nwidth = [-8, 16, 32]\nseed = [0, 1]\n")
    with pytest.raises(ValueError, match="describes 6 runs"):
        load_spec(path, max_runs=5)
    with pytest.raises(ValueError, match="model.embedding_dim must be >= 1"):
        load_spec(path, max_runs=6)
    assert max_runs() == 100_000


def test_allow_large_lifts_the_limit_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[axes]\nwidth = [8, 16]\n[base.data]\nnum_users = 40\nnum_items = 100\nnum_clusters = 4\n')
    assert main(["sweep", "plan", str(path), "--allow-large"]) == 0
    assert "2 runs, total" in capsys.readouterr().out


def _seeded_grid(seeds: int, **extra: object) -> dict:
    return {"axes": {"depth": [1, 2, 3], "width": [8, 16, 32, 64], "seed": list(range(seeds))}, "base": BASE, **extra}


@pytest.mark.parametrize(("seeds", "extra"), [
    (10, {}),  # 120 runs: more than the table shows, ties in FLOPs across seeds
    (10, {"budget": {"max_flops": 3e9}}),  # of 9.7e9 in all
    (10, {"budget": {"max_device_hours": 4e-9}, "cost": {"mfu": 0.3}}),  # of 9.1e-9
    (2, {"design": {"kind": "isoflop", "budgets": [1e3, 3e9, 1e10]}}),  # skipped points too
])
def test_streamed_summary_prints_what_the_full_plan_prints(seeds: int, extra: dict) -> None:
    spec = spec_from_dict(_seeded_grid(seeds, **extra), source="g.toml")
    plan, summary = plan_sweep(spec), summarize_plan(spec)
    assert summary.num_runs == len(plan.runs) and summary.num_skipped == len(plan.skipped)
    assert summary.total_flops == pytest.approx(plan.total_flops, rel=1e-12)
    assert [r.run_id for r in summary.head] == [r.run_id for r in plan.runs[: len(summary.head)]]
    assert [r.run_id for r in summary.tail] == [r.run_id for r in plan.runs[len(plan.runs) - len(summary.tail):]]
    if "budget" in extra:
        assert 0 < summary.fits == len(plan.within_budget()) < summary.num_runs
        assert summary.fits_flops == sum(r.flops["train"] for r in plan.within_budget())
    else:
        assert summary.fits is None
    assert format_plan(summary) == format_plan(plan)


def _peak_bytes(seeds: int) -> int:
    spec = spec_from_dict(_seeded_grid(seeds), source="g.toml")
    summarize_plan(spec)  # warm the per-shape FLOPs caches, so both sizes measure the runs alone
    tracemalloc.start()
    summary = summarize_plan(spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert summary.num_runs == 12 * seeds
    return peak


def test_streamed_plan_memory_does_not_grow_with_the_runs() -> None:
    # Holding every PlannedRun (plan_sweep) costs about 4 KB per run; streaming keeps 16 bytes
    # (FLOPs and id) plus a fixed table of head and tail rows.
    small, large = _peak_bytes(10), _peak_bytes(60)  # 120 and 720 runs: both fill the table
    per_run = (large - small) / (720 - 120)
    assert per_run < 64, f"{per_run:.0f} bytes per run (small {small:,}, large {large:,})"
