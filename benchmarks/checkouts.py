"""What the side-by-side benchmarks record about each checkout they measure."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit_of(checkout: Path) -> str | None:
    """The checkout's commit, with "+dirty" when its tracked files have changes (None outside git)."""
    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")
