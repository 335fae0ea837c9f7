from __future__ import annotations

import os

# Set before anything imports torch or triton (kernels imports torch.utils.flop_counter, which
# imports triton): without a GPU, Triton kernels run under the numpy interpreter.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests never reach W&B's servers, and runs stay single-threaded on the 2-core CI machine.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# After the environment above: this imports triton, and with it numpy, whose BLAS reads
# OMP_NUM_THREADS when it loads.
if os.environ.get("TRITON_INTERPRET") == "1":
    from triton_interpreter import install as _patch_triton_language_once_per_launch  # noqa: E402

    _patch_triton_language_once_per_launch()

# The PostgreSQL server of the ledger tests (unit and integration), one per session.
from integration.pg_server import postgres_url  # noqa: E402,F401

# `make test` runs the suite on pytest-xdist workers: every `slurm` test on one of them.
from xdist_groups import pytest_xdist_make_scheduler  # noqa: E402,F401
