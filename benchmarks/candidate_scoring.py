"""Where dense candidate scoring beats gathering: the sampled softmax's forward + backward, both ways.

    python benchmarks/candidate_scoring.py
    python benchmarks/candidate_scoring.py --items 1682 26744 --dims 50 --positions 7500

For each catalogue size I and width D, times `gr_core.losses.sampled_softmax_loss` with
scoring="gather" and scoring="dense" (forward and backward through the outputs and the item
table; best of `--repeats`, one thread, CPU) at T positions and R negatives, and prints the
ratio beside (I+1)/(R+1) and what "auto" picks (`DENSE_SCORING_MAX_RATIO`). The defaults cover
MovieLens-100K (1682 items), ML-1M (3706), and larger catalogues up to ML-20M's (26744), at T of
an ML-100K batch. Writes benchmarks/results/candidate_scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gr_core.losses import DENSE_SCORING_MAX_RATIO, chosen_scoring, sampled_softmax_loss  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[1682, 3706, 8000, 16000, 26744])
    p.add_argument("--dims", type=int, nargs="+", default=[50, 256])
    p.add_argument("--positions", type=int, default=7500, help="T: supervised positions per batch")
    p.add_argument("--negatives", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "candidate_scoring.json")
    return p.parse_args(argv)


def seconds(scoring: str, items: int, dim: int, args: argparse.Namespace) -> float:
    """Best time of one forward + backward of the loss with `scoring`."""
    gen = torch.Generator().manual_seed(0)
    table = F.normalize(torch.randn(items + 1, dim, generator=gen), dim=-1).requires_grad_(True)
    out = F.normalize(torch.randn(args.positions, dim, generator=gen), dim=-1).requires_grad_(True)
    targets = torch.randint(1, items + 1, (args.positions,), generator=gen)
    negatives = torch.randint(1, items + 1, (args.positions, args.negatives), generator=gen)
    best = float("inf")
    for _ in range(args.repeats):
        table.grad = out.grad = None
        started = time.perf_counter()
        sampled_softmax_loss(out, targets, table, num_negatives=args.negatives, temperature=0.05,
                             negatives_TR=negatives, reduction="sum", scoring=scoring).backward()  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print("| items | D | (I+1)/(R+1) | gather (ms) | dense (ms) | gather / dense | auto |")
    print("|---|---|---|---|---|---|---|")
    for items in args.items:
        for dim in args.dims:
            gather, dense = seconds("gather", items, dim, args), seconds("dense", items, dim, args)
            ratio = (items + 1) / (args.negatives + 1)
            auto = chosen_scoring("auto", items, args.negatives + 1)
            rows.append({"items": items, "dim": dim, "catalogue_over_candidates": ratio, "gather_s": gather,
                         "dense_s": dense, "speedup_dense": gather / dense, "auto": auto})
            print(f"| {items} | {dim} | {ratio:.1f} | {gather * 1e3:.0f} | {dense * 1e3:.0f} | {gather / dense:.2f} "
                  f"| {auto} |", flush=True)
    out = {
        "command": "python " + shlex.join([str(Path(__file__).relative_to(ROOT)),
                                           *(argv if argv is not None else sys.argv[1:])]),
        "positions": args.positions, "negatives": args.negatives, "threads": 1,
        "dense_scoring_max_ratio": DENSE_SCORING_MAX_RATIO, "rows": rows,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
