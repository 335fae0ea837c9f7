"""Publish a finished multi-family scaling sweep: one CSV row per run, the fits' JSON, figures, a page.

    python benchmarks/family_study.py --sweep studies/ml100k-scaling        # after the sweep ran
    python benchmarks/family_study.py --sweep DIR --name ml100k-scaling --docs docs/ml100k-scaling.md

Reads the sweep's ledger (read-only) and spec, computes the Approximate Entropy of each run's
training data (`analysis.apen`, m = 2, r = 0.2, each user's last max_seq_len items), analyses the
families (`analysis.family_study`: per family and metric the saturating and log-linear laws in
training FLOPs with intervals, the Performance Law, all backtested on the top decade of compute;
per pair of families the slope comparison and its verdict), and writes

    benchmarks/results/<name>.csv          one row per completed run: family, shape, data share,
                                           parameters, planned and spent FLOPs and tokens, ApEn,
                                           every metric, seed, wall time
    benchmarks/results/<name>.json         the analysis, with the sweep's wall time and machine
    docs/<name>-<metric>.png               metric against spent training FLOPs, by family
    the --docs page                        the tables and the verdicts, linking the figures
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.apen import DEFAULT_M, DEFAULT_R  # noqa: E402
from analysis.family_study import FamilyRun, analyse_families, family_runs  # noqa: E402
from analysis.plots import family_scaling_figure  # noqa: E402
from sweeps.layout import SweepLayout  # noqa: E402
from sweeps.spec import load_spec  # noqa: E402

METRICS = ("ndcg@10", "hr@10", "ne")  # those of them that every run reports (NE: runs that train ranking)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkouts import commit_of  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", type=Path, required=True, help="the finished sweep's directory")
    p.add_argument("--name", help="file stem of the outputs (default: the sweep's name)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--figures", type=Path, default=ROOT / "docs")
    p.add_argument("--docs", type=Path, help="write the page here (default: <figures>/<name>.md)")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--spec-source", help="where the sweep's spec lives in the repository, for the page "
                                         "(default: the sweep's stored copy)")
    return p.parse_args(argv)


def read_runs(sweep_dir: Path) -> tuple[Any, list[FamilyRun], dict[str, Any], float | None]:
    """The sweep's spec, its completed runs (with family and ApEn), their ledger records, and the
    seconds from the first attempt's start to the last one's end."""
    layout = SweepLayout(sweep_dir)
    spec = load_spec(layout.spec)
    ledger = layout.open_ledger(spec)
    records = {r.run_id: r for r in ledger.runs().values() if r.state == "complete"}
    finished = [t for t in ledger.study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    span = ((max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
            if finished else None)
    return spec, family_runs(records.values()), records, span


def csv_rows(runs: list[FamilyRun], records: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for run in sorted(runs, key=lambda r: (r.family, r.row.flops)):
        record, row = records[run.row.run_id], run.row
        best, last = row.at_best, row.at_last
        out.append({
            "run_id": row.run_id, "family": run.family, "embedding_dim": row.embedding_dim, "num_blocks": row.num_blocks,
            "user_fraction": record.config["data"].get("user_fraction", 1.0), "seed": row.seed,
            "params_non_embedding": row.params_non_embedding, "params_embedding": row.params_embedding,
            "flops_planned": row.flops, "tokens_planned": row.tokens,
            "flops_at_best": None if best is None else best.flops, "tokens_at_best": None if best is None else best.tokens,
            "best_epoch": None if best is None else best.epoch,
            "flops_spent": None if last is None else last.flops, "tokens_spent": None if last is None else last.tokens,
            "epochs_run": None if last is None else last.epoch, "apen": run.apen, "lr": record.config["train"]["lr"],
            "wall_time_s": row.wall_time_s, **{k: row.metrics[k] for k in sorted(row.metrics)},
        })
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec, runs, records, span = read_runs(args.sweep)
    if not runs:
        raise SystemExit(f"error: {args.sweep} has no completed runs; run the sweep first")
    name = args.name or spec.sweep.name
    metrics = [m for m in METRICS if all(m in run.row.metrics for run in runs)]
    analysis = analyse_families(runs, metrics=metrics, n_bootstrap=args.bootstrap)
    rows = csv_rows(runs, records)
    args.results.mkdir(parents=True, exist_ok=True)
    csv_path = args.results / f"{name}.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figures = {}
    args.figures.mkdir(parents=True, exist_ok=True)
    for metric in metrics:
        path = args.figures / f"{name}-{metric.replace('@', '')}.png"
        family_scaling_figure(analysis["metrics"][metric], metric=metric, path=path)
        figures[metric] = path
    wall = sum(r["wall_time_s"] or 0.0 for r in rows)
    doc = {
        "study": name, "sweep": str(args.sweep), "spec": str(SweepLayout(args.sweep).spec),
        "spec_source": args.spec_source or str(SweepLayout(args.sweep).spec),
        "command": "python benchmarks/family_study.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "commit": commit_of(ROOT), "runs": len(rows), "sum_of_run_wall_times_s": wall,
        "sweep_wall_time_s": span,
        "apen": {"m": DEFAULT_M, "r": DEFAULT_R, "per_user_items": "the last max_seq_len"},
        "apen_by_user_fraction": {str(r["user_fraction"]): r["apen"] for r in rows},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        **analysis,
    }
    json_path = args.results / f"{name}.json"
    json_path.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    page = args.docs or args.figures / f"{name}.md"
    page.write_text(render_page(doc, figures, page.parent))
    print(f"wrote {csv_path}, {json_path}, {page} and {len(figures)} figures")
    for metric in metrics:
        for cmp in analysis["metrics"][metric]["comparisons"]:
            print(cmp["verdict"])
    return 0


def _num(value: Any, fmt: str = "{:.4f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def render_page(doc: dict[str, Any], figures: dict[str, Path], where: Path) -> str:
    lines = [f"# {doc['study']}: a scaling study across model families", "",
             f"{doc['runs']} runs; generated by `{doc['command']}` at commit {doc['commit'][:12]} on "
             f"{doc['machine']['cpu_count']} CPU cores ({doc['machine']['platform']}). The sum of the runs' wall "
             f"times is {doc['sum_of_run_wall_times_s'] / 60:.1f} min; the sweep took {_num(doc['sweep_wall_time_s'] and doc['sweep_wall_time_s'] / 60, '{:.1f}')} min from its first run's start to its last run's end. Each run is placed at the training FLOPs spent "
             "up to its best validation epoch, with the test metric there. Backtests fit the runs below the top "
             "decade of compute (C < max C / 10) and predict that decade; errors are relative to the observed value. "
             "The Performance Law's data term is D' = tokens trained x ApEn of the run's sequences "
             f"(m = {doc['apen']['m']}, r = {doc['apen']['r']}, each user's last max_seq_len items): "
             + ", ".join(f"{share} of the users: {value:.4f}" for share, value in sorted(doc["apen_by_user_fraction"].items()))
             + ".", "", f"Multiplicity: {doc['multiplicity']}", "",
             f"Rerun: `gr-scaling sweep launch <spec> --out DIR` (this sweep's spec: {doc['spec_source']}), then "
             f"`python benchmarks/family_study.py --sweep DIR`; `gr-scaling report DIR --by-family [--metric hr@10]` "
             "draws the same figure per metric (DIR/report/<metric>/families.png) beside a report per family.", ""]
    for metric, result in doc["metrics"].items():
        lines += [f"## {metric}", "", f"![{metric} against training FLOPs]({os.path.relpath(figures[metric], where)})", ""]
        for cmp in result["comparisons"]:
            lines += [f"- {cmp['verdict']} (Holm-adjusted p = {cmp['p_holm']:.2g})"]
        lines += ["", "| family | runs | log-linear gain per decade | power-law alpha | backtest mean / max rel. error: "
                  "power law | log-linear | Performance Law | R^2 on all runs: log-linear / power law / Performance Law |",
                  "|---|---|---|---|---|---|---|---|"]
        for family, fam in result["per_family"].items():
            if "plain" not in fam:
                lines.append(f"| {family} | {fam['n_runs']} | {fam.get('error', '')} | | | | | |")
                continue
            ll = (fam["plain"]["log_linear"]["fit"] or {})
            pl = (fam["plain"]["power_law"]["fit"] or {})
            gain = ll.get("gain_per_decade")
            slope_iv = (ll.get("param_intervals") or {}).get("b") or [None, None]
            gain_iv = [None if v is None else v * math.log(10.0) for v in slope_iv]
            alpha = (pl.get("params") or {}).get("alpha")
            alpha_iv = (pl.get("param_intervals") or {}).get("alpha") or [None, None]

            def bt(entry: dict[str, Any] | None, why: str | None = None) -> str:
                if not entry or entry.get("mean_abs_rel_err") is None:
                    reason = (entry or {}).get("error") or why
                    return f"none ({reason})" if reason else "none"
                return f"{entry['mean_abs_rel_err']:.1%} / {entry['max_abs_rel_err']:.1%}"

            law = fam["performance_law"]
            lines.append(
                f"| {family} | {fam['n_runs']} | {_num(gain, '{:+.4f}')} [{_num(gain_iv[0], '{:+.4f}')}, "
                f"{_num(gain_iv[1], '{:+.4f}')}] | {_num(alpha, '{:.3f}')} [{_num(alpha_iv[0], '{:.3f}')}, "
                f"{_num(alpha_iv[1], '{:.3f}')}] | {bt(fam['plain']['power_law']['backtest'], fam.get('plain_backtest_error'))} | "
                f"{bt(fam['plain']['log_linear']['backtest'], fam.get('plain_backtest_error'))} | "
                f"{bt(law.get('backtest'), law.get('backtest_error') or law.get('fit_error'))} | "
                f"{_num(ll.get('r2'), '{:.3f}')} / {_num(pl.get('r2'), '{:.3f}')} / "
                f"{_num((law.get('fit') or {}).get('r2'), '{:.3f}')} |")
        lines += ["", "Performance Law exponents (residual-bootstrap intervals):", ""]
        for family, fam in result["per_family"].items():
            law_fit = (fam.get("performance_law") or {}).get("fit")
            if not law_fit:
                lines.append(f"- {family}: not fitted ({(fam.get('performance_law') or {}).get('fit_error', fam.get('error'))})")
                continue
            intervals = law_fit.get("intervals") or {}
            shown = []
            for name in ("a_L", "a_d", "a_D"):
                lo, hi = intervals.get(name) or [None, None]
                shown.append(f"{name} {_num(law_fit['params'][name], '{:.3g}')} "
                             + ("(not identified)" if name in law_fit["not_identified"] else
                                f"[{_num(lo, '{:.3g}')}, {_num(hi, '{:.3g}')}]"))
            lines.append(f"- {family}: " + ", ".join(shown))
        lines.append("")
    lines += ["## Validation loss in parameters and data", "",
              "The two-variable law L(N, D) = E + A / N^alpha + B / D^beta (Chinchilla's approach 3, "
              "`analysis.chinchilla`) on each run's validation NE at its reported epoch, N the non-embedding "
              "parameters and D the tokens trained up to that epoch; bootstrap intervals over runs, and the same "
              "top-decade backtest.", "",
              "| family | runs (distinct N / D) | E | alpha | beta | R^2 | backtest mean / max rel. error | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for family, law in doc.get("validation_loss_law", {}).items():
        fit = law.get("fit") or {}
        params, intervals = fit.get("params") or {}, fit.get("param_intervals") or {}

        def with_interval(name: str) -> str:
            if name not in params:
                return "n/a"
            iv = intervals.get(name)
            return f"{params[name]:.3g} " + ("(not identified)" if iv is None else f"[{_num(iv[0], '{:.3g}')}, {_num(iv[1], '{:.3g}')}]")

        bt = law.get("backtest")
        lines.append(f"| {family} | {law['n_runs']} ({law.get('n_distinct_N')} / {law.get('n_distinct_D')}) | "
                     f"{with_interval('E')} | {with_interval('alpha')} | {with_interval('beta')} | "
                     f"{_num(law.get('r2'), '{:.3f}')} | "
                     + (f"{bt['mean_abs_rel_err']:.2%} / {bt['max_abs_rel_err']:.2%}" if bt else
                        f"none ({law.get('backtest_error', law.get('fit_error', ''))})")
                     + f" | {law['verdict']} |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
