"""A scripted evaluation pass for trainer tests that must know which weights were tested."""

from __future__ import annotations


def scripted(per_epoch: dict[str, list[float]]):
    """A fake evaluation pass: validation gives `per_epoch[m][i]` at the i-th evaluation; a test
    pass gives 10x the validation value of the epoch whose weights the model holds (recognised by
    their sum), so a test on the wrong weights gives the wrong value."""
    seen: dict[float, int] = {}

    def fake(model, batches, per_user=None):
        list(batches)
        key = float(sum(p.detach().double().sum() for p in model.parameters()))
        if key in seen:  # weights evaluated before: the test pass after training
            epoch, scale = seen[key], 10
        else:
            epoch, scale = seen.setdefault(key, len(seen)), 1
        return {m: values[epoch] * scale for m, values in per_epoch.items()}

    return fake
