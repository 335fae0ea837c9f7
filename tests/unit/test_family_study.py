"""The multi-family study's analysis on runs whose scaling is known: fits, backtests, laws, verdicts."""

from __future__ import annotations

import itertools
import math

import numpy as np

from analysis.family_study import FamilyRun, analyse_families
from analysis.plots import family_scaling_figure
from sweeps.rows import Checkpoint, RunRow

GAINS = {"hstu": 0.030, "sasrec": 0.010, "fuxi": 0.010}  # ndcg@10 per decade of compute


def _runs(rng: np.random.Generator) -> list[FamilyRun]:
    runs = []
    for family, gain in GAINS.items():
        for width, depth, fraction in itertools.product((16, 32, 64), (1, 2), (0.25, 0.5, 1.0)):
            tokens = 2.0e6 * fraction * 50
            flops = 6.0 * (depth * 12 * width**2 + 128 * width) * tokens
            y = 0.06 + gain / math.log(10) * math.log(flops / 1e11) + rng.normal(0, 0.003)
            row = RunRow(
                run_id=f"{family}-{width}-{depth}-{fraction}", metrics={"ndcg@10": y, "val_ndcg@10": y}, flops=flops,
                tokens=tokens, planned=True, at_best=Checkpoint(flops=flops, tokens=tokens, epoch=50),
                at_last=Checkpoint(flops=flops, tokens=tokens, epoch=50), num_blocks=depth, embedding_dim=width, seed=0,
                # no parameter count: the two-variable law in (N, D), the slow part of each fit, is skipped
            )
            runs.append(FamilyRun(row=row, family=family, apen=1.5 + 0.1 * fraction))
    return runs


def test_each_family_is_fitted_backtested_on_its_top_decade_and_the_pairs_are_compared(tmp_path) -> None:
    result = analyse_families(_runs(np.random.default_rng(0)), metrics=["ndcg@10"], n_bootstrap=50)
    assert result["families"] == ["fuxi", "hstu", "sasrec"]
    ndcg = result["metrics"]["ndcg@10"]
    for family, gain in GAINS.items():
        fam = ndcg["per_family"][family]
        assert fam["n_runs"] == 18 and len(fam["points"]) == 18
        loglinear = fam["plain"]["log_linear"]
        assert abs(loglinear["fit"]["gain_per_decade"] - gain) < 0.004
        backtest = loglinear["backtest"]
        flops = np.array([p["flops"] for p in fam["points"]])
        assert backtest["n_holdout"] == int(np.sum(flops >= flops.max() / 10)) and backtest["max_abs_rel_err"] < 0.1
        assert fam["plain"]["power_law"]["backtest"] is not None
        assert "fit" in fam["performance_law"] and "backtest" in fam["performance_law"]
    verdicts = {frozenset((c["family_a"], c["family_b"])): c for c in ndcg["comparisons"]}
    assert len(verdicts) == 3
    assert verdicts[frozenset(("hstu", "sasrec"))]["better"] == "hstu"
    assert verdicts[frozenset(("fuxi", "sasrec"))]["better"] is None  # the same gain: cannot tell
    assert "cannot tell" in verdicts[frozenset(("fuxi", "sasrec"))]["verdict"]
    assert all(c["p_holm"] >= c["p_value"] for c in verdicts.values())
    assert verdicts[frozenset(("hstu", "sasrec"))]["significant_after_holm"]  # 0.030 vs 0.010 survives it
    assert result["multiplicity"].startswith("3 comparisons, each tested at 95%: 2 significant alone, 2 after Holm")
    figure = family_scaling_figure(ndcg, metric="ndcg@10", path=tmp_path / "ndcg.png")
    assert figure.stat().st_size > 10_000


def _validation_rows(rng: np.random.Generator, law: bool) -> list[RunRow]:
    """18 runs over N x D; validation NE from L = 0.9 + 2/N^0.5 + 30/D^0.3 (plus noise), or pure noise."""
    rows = []
    for width, depth, fraction in itertools.product((16, 32, 64), (1, 2), (0.25, 0.5, 1.0)):
        n = depth * 12 * width**2
        tokens = 2.0e6 * fraction * 50
        flops = 6.0 * n * tokens
        loss = 0.9 + 2.0 / n**0.5 + 30.0 / tokens**0.3 if law else 0.95
        loss += rng.normal(0, 1e-4 if law else 5e-3)
        rows.append(RunRow(
            run_id=f"{width}-{depth}-{fraction}", metrics={"val_ne": loss}, flops=flops, tokens=tokens, planned=True,
            at_best=Checkpoint(flops=flops, tokens=tokens, epoch=50), params_non_embedding=n, num_blocks=depth,
            embedding_dim=width))
    return rows


def test_two_variable_law_on_validation_loss_recovers_a_known_law_and_says_when_it_does_not_fit() -> None:
    from analysis.family_study import two_variable_law

    good = two_variable_law(_validation_rows(np.random.default_rng(1), law=True), n_bootstrap=100, level=0.95, seed=0)
    assert good["fits"] and good["r2"] > 0.99 and good["n_runs"] == 18
    params, intervals = good["fit"]["params"], good["fit"]["param_intervals"]
    assert abs(params["E"] - 0.9) < 0.01 and abs(params["alpha"] - 0.5) < 0.1
    lo, hi = intervals["alpha"]
    assert lo <= 0.5 <= hi
    assert good["backtest"]["n_holdout"] >= 1 and good["backtest"]["max_abs_rel_err"] < 0.01
    assert good["verdict"].startswith("The two-variable law fits")

    noise = two_variable_law(_validation_rows(np.random.default_rng(2), law=False), n_bootstrap=100, level=0.95, seed=0)
    assert not noise["fits"] and "does not fit" in noise["verdict"]
