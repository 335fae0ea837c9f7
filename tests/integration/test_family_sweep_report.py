"""A sweep of two model families, reported per family and compared (`report --by-family`, the publication script)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gr_scaling.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
[sweep]
name = "families"
metric = "ndcg@10"

[axes]
family = ["hstu", "sasrec"]
width = [8, 16, 32]
users = [60, 200, 600]

[axis_settings.family.sasrec.train]
lr = 3e-3

[base.data]
num_items = 60
num_clusters = 6
min_events = 6
max_events = 16

[base.model]
num_blocks = 1
max_seq_len = 12

[base.train]
task = "both"
epochs = 1
batch_size = 64
num_negatives = 8

[dispatch]
executor = "local"
max_parallel = 2
poll_interval_s = 0.2

[tracking]
mode = "disabled"
"""


@pytest.mark.slow
def test_a_two_family_sweep_is_reported_per_family_and_compared(tmp_path: Path, capsys) -> None:
    spec, sweep_dir = tmp_path / "families.toml", tmp_path / "sweep"
    spec.write_text(SPEC)
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 0
    capsys.readouterr()

    # 25 bootstrap draws: enough for intervals (analysis.varpro.MIN_BOOTSTRAP_FOR_INTERVALS, 20) with
    # a margin for degenerate resamples, so the verdicts come from intervals; their coverage is
    # checked by simulation in tests/unit (test_performance_law.py, test_analysis_coverage.py).
    assert main(["report", str(sweep_dir), "--by-family", "--bootstrap", "25"]) == 0
    printed = capsys.readouterr().out
    out = sweep_dir / "report" / "ndcg@10"
    for family in ("hstu", "sasrec"):
        assert (out / family / "report.html").exists() and f"report ({family})" in printed
    analysis = json.loads((out / "families.json").read_text())
    [comparison] = analysis["metrics"]["ndcg@10"]["comparisons"]
    assert {comparison["family_a"], comparison["family_b"]} == {"hstu", "sasrec"}
    assert comparison["verdict"] in printed and (out / "families.png").stat().st_size > 10_000
    per_family = analysis["metrics"]["ndcg@10"]["per_family"]
    assert {f: per_family[f]["n_runs"] for f in per_family} == {"hstu": 9, "sasrec": 9}
    assert all(p["apen"] > 0 for f in per_family.values() for p in f["points"])

    # The publication script on the same sweep: one CSV row per run, the JSON, figures and a page.
    results, docs = tmp_path / "results", tmp_path / "docs"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "family_study.py"), "--sweep", str(sweep_dir), "--results",
         str(results), "--figures", str(docs), "--bootstrap", "25"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with (results / "families.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 18 and {r["family"] for r in rows} == {"hstu", "sasrec"}
    assert {"flops_at_best", "tokens_at_best", "apen", "ndcg@10", "ne", "lr", "user_fraction"} <= set(rows[0])
    assert {r["lr"] for r in rows if r["family"] == "sasrec"} == {"0.003"}
    page = (docs / "families.md").read_text()
    assert "| hstu | 9 |" in page and "families-ndcg10.png" in page
    published = json.loads((results / "families.json").read_text())
    assert published["runs"] == 18 and set(published["metrics"]) == {"ndcg@10", "hr@10", "ne"}


def test_by_family_on_a_sweep_of_one_family_says_what_to_do(tmp_path: Path, capsys) -> None:
    from sweeps.ledger import Ledger
    from sweeps.plan import plan_sweep
    from sweeps.spec import load_spec

    spec_path, sweep_dir = tmp_path / "one.toml", tmp_path / "sweep"
    spec_path.write_text(SPEC.replace('family = ["hstu", "sasrec"]', 'family = ["hstu"]')
                         .replace("[axis_settings.family.sasrec.train]\nlr = 3e-3\n", ""))
    spec = load_spec(spec_path)
    sweep_dir.mkdir()
    (sweep_dir / "spec.toml").write_text(spec_path.read_text())
    Ledger(f"sqlite:///{sweep_dir / 'ledger.db'}", "families").register(plan_sweep(spec).runs)
    assert main(["report", str(sweep_dir), "--by-family"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--by-family" in err
