"""A tiny checkpointable job, for testing that a cluster requeues and resumes preempted work.

`Countdown` counts `steps` steps down, saving its position to a JSON file after each. submitit's
`helpers.Checkpointable` makes it requeue itself when Slurm signals preemption or a timeout; the
requeued job calls it again, and it resumes from the file instead of starting over. The file
also counts the starts, so a test can tell a resumed run from an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import submitit

import slurm.jobs  # noqa: F401  (in the job: submitit's requeue, made to survive its own SIGTERM)


class Countdown(submitit.helpers.Checkpointable):
    def __init__(self, state_file: str, steps: int, step_s: float) -> None:
        self.state_file, self.steps, self.step_s = state_file, steps, step_s

    def _save(self, state: dict[str, Any]) -> None:
        tmp = Path(f"{self.state_file}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)  # a kill mid-write never leaves a torn file

    def __call__(self) -> dict[str, Any]:
        path = Path(self.state_file)
        state = json.loads(path.read_text()) if path.exists() else {"remaining": self.steps, "starts": 0}
        state["starts"] += 1
        self._save(state)
        while state["remaining"] > 0:
            time.sleep(self.step_s)
            state["remaining"] -= 1
            self._save(state)
        return state
