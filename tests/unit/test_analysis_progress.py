"""Progress of bootstrap fitting (`analysis.progress`): log lines without a terminal, a tqdm bar on
one, and batching that leaves every fitted number unchanged."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import sys
import termios
import threading

import numpy as np
import pytest

from analysis import chinchilla, progress, varpro
from analysis.chinchilla import fit_chinchilla
from analysis.dataset import ScalingData
from analysis.study import StudyOptions, run_study

CONTROL = re.compile(r"[\r\x1b]")  # carriage returns and escape sequences: what a live bar writes


def _law_data(k: int = 5) -> ScalingData:
    n = np.repeat(np.geomspace(1e6, 1e8, k), k)
    d = np.tile(np.geomspace(1e8, 1e10, k), k)
    y = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(np.random.default_rng(0).normal(0.0, 0.002, n.size))
    return ScalingData(metric="loss", higher_is_better=False, flops=9.9 * n * d, y=y,
                       run_ids=tuple(map(str, range(n.size))), n_params=n, tokens=d)


def test_study_without_a_terminal_logs_a_few_plain_lines(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    # A console handler on stderr, which under capsys is captured and not a terminal (made here:
    # during the test's call phase sys.stderr is capsys's stream, not the session's).
    console = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(console)
    try:
        study = run_study(_law_data(), StudyOptions(n_bootstrap=600, backtest_bootstrap=300, cost=None))
    finally:
        logging.getLogger().removeHandler(console)
    assert set(study.fits) == {"power_law", "log_linear", "pure_power", "chinchilla"}
    lines = [r.getMessage() for r in caplog.records if r.name == "analysis.progress" and r.levelno == logging.INFO]
    assert lines[0] == "fitting loss (600 bootstrap draws): 4 forms..."
    assert re.fullmatch(r"fitting loss \(600 bootstrap draws\): 4 forms done in \d+\.\d s", lines[1])
    assert lines[2] == "backtesting loss (300 bootstrap draws): 4 forms..."
    assert re.fullmatch(r"backtesting loss \(300 bootstrap draws\): 4 forms done in \d+\.\d s", lines[3])
    assert len(lines) == 4  # the bootstrap batches inside are nested: DEBUG, not INFO
    out, err = capsys.readouterr()
    assert "4 forms done in" in err and not CONTROL.search(out + err)


def test_bootstrap_batches_log_at_info_when_called_alone_and_debug_inside_a_study(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _law_data()
    caplog.set_level(logging.DEBUG, logger="analysis.progress")
    fit_chinchilla(data.n_params, data.tokens, data.y, higher_is_better=False, n_bootstrap=600, seed=1)
    alone = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "analysis.progress"]
    assert alone[0] == (logging.INFO, "chinchilla bootstrap: 600 refits...")
    assert alone[-1][0] == logging.INFO and re.fullmatch(r"chinchilla bootstrap: 600 refits done in \d+\.\d s",
                                                         alone[-1][1])
    caplog.clear()
    run_study(data, StudyOptions(n_bootstrap=600, backtest_bootstrap=0, cost=None))
    nested = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "analysis.progress"]
    assert (logging.DEBUG, "chinchilla bootstrap: 600 refits...") in nested
    assert (logging.DEBUG, "power-law bootstrap: 600 refits...") in nested
    assert not CONTROL.search("".join(capsys.readouterr()))


def test_long_loops_say_how_far_they_are_and_when_they_stop(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a line at every step instead of every 10 s
    caplog.set_level(logging.INFO, logger="analysis.progress")
    assert [(s.start, s.stop) for s in progress.batches(7, 3, desc="demo", unit="refit")] == [(0, 3), (3, 6), (6, 7)]
    for name in progress.track(["a", "b", "c"], desc="forms", unit="form", label=str):
        if name == "b":
            break
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["demo: 7 refits...", "demo: 3/7 refits after 0 s", "demo: 6/7 refits after 0 s"]
    assert re.fullmatch(r"demo: 7 refits done in \d+\.\d s", messages[3])
    assert messages[4:6] == ["forms: 3 forms...", "forms: 1/3 forms after 0 s (now: b)"]
    assert re.fullmatch(r"forms: stopped after 1/3 forms \(\d+\.\d s\)", messages[6])
    # One batch is not a loop worth reporting; none is nothing at all.
    caplog.clear()
    assert list(progress.batches(3, 3, desc="tiny")) == [slice(0, 3)] and list(progress.batches(0, 3, desc="x")) == []
    assert caplog.records == []
    with pytest.raises(ValueError, match="batch size must be >= 1, got 0"):
        list(progress.batches(3, 0, desc="x"))


def test_batching_changes_no_fitted_number(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _law_data()
    batched = fit_chinchilla(data.n_params, data.tokens, data.y, higher_is_better=False, n_bootstrap=600, seed=2)
    monkeypatch.setattr(chinchilla, "BOOTSTRAP_BATCH", 10_000)  # the former single minimize_batch call
    whole = fit_chinchilla(data.n_params, data.tokens, data.y, higher_is_better=False, n_bootstrap=600, seed=2)
    assert batched.bootstrap_theta.shape == (600 - batched.n_bootstrap_not_converged, 5)
    np.testing.assert_array_equal(batched.bootstrap_theta, whole.bootstrap_theta)
    assert batched.param_intervals == whole.param_intervals

    rng = np.random.default_rng(3)
    lnx = np.linspace(-3.0, 3.0, 12)
    y_Bn = 0.5 - 0.3 * np.exp(-0.4 * lnx) + rng.normal(0.0, 0.01, (1100, lnx.size))
    batched_rows = varpro.profile_fit_batches(lnx, y_Bn, np.ones((1, lnx.size)), -1.0, 1.0)
    np.testing.assert_array_equal(batched_rows, varpro.profile_fit(lnx, y_Bn, np.ones((1, lnx.size)), -1.0, 1.0))
    assert np.median(batched_rows[:, 2]) == pytest.approx(0.4, abs=0.05)  # the alpha the data came from


def test_a_terminal_gets_a_live_bar_instead_of_log_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a pty starts 0 columns wide
    chunks: list[bytes] = []

    def drain() -> None:  # read while the bar writes, so a full pty buffer never blocks it
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the writing end is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", terminal)
    caplog.set_level(logging.INFO, logger="analysis.progress")
    data = _law_data()
    fit_chinchilla(data.n_params, data.tokens, data.y, higher_is_better=False, n_bootstrap=600, seed=1)
    terminal.close()
    reader.join(timeout=10)
    os.close(master)
    shown = b"".join(chunks).decode()
    assert "\r" in shown and "chinchilla bootstrap: 100%" in shown and "600/600" in shown
    assert [r for r in caplog.records if r.name == "analysis.progress"] == []  # the bar replaces the log lines
