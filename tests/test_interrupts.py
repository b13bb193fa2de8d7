"""A run that diverges or is interrupted ends promptly, with a message, and loses nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgafast.cli import main

IMAGES = sorted((Path(__file__).resolve().parents[1] / "sgafast" / "data" / "images").glob("*.png"))


def test_a_schedule_that_would_underflow_tau_still_finishes(tmp_path, capsys):
    """tau = exp(-60) at the end: once NaN and a hung entropy coder, now hard rounding."""
    args = ["refine", str(IMAGES[0]), "-o", str(tmp_path), "--tau-rate", "1", "--iters", "60",
            "--track-every", "0", "--quiet", "--no-compile"]
    assert main(args) == 0
    assert (tmp_path / f"{IMAGES[0].stem}.bin").stat().st_size > 38


def test_a_diverging_image_fails_alone(tmp_path, capsys):
    args = ["refine", *map(str, IMAGES), "-o", str(tmp_path), "--lr", "3e38", "--iters", "4",
            "--track-every", "0", "--quiet", "--no-compile"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("diverged") == len(IMAGES) and "lower --lr" in err
    assert not list(tmp_path.glob("*.bin"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_within_seconds(tmp_path, signum):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgafast.cli", "refine", str(IMAGES[0]), "-o", str(tmp_path),
         "--iters", "1000000", "--track-every", "0", "--no-compile", "--device", "cpu"],
        env=env, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "refining 1 of 1 images" not in seen:  # the handler is installed, the run started
        line = proc.stderr.readline()
        assert line, f"the run ended before it started: {seen}"
        seen += line
    time.sleep(3)  # into the refinement loop
    tick = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop within 30 s of the signal")
    assert time.monotonic() - tick < 30
    assert proc.returncode == 130 and "\r" not in err  # a log: no bar to split the message
    assert err.splitlines()[-1] == ("sgafast: interrupted; finished images are written, and the "
                                    "same command resumes the run")
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
