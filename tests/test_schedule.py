"""Temperature and learning-rate schedules: the paper's (docs/method.md §4) and the budget's."""

import json
import math
import re

import pytest
import torch

from sgafast import RefineConfig, temperature
from sgafast.cli import main
from sgafast.errors import SgafastError
from sgafast.ops.schedule import TAU_MAX, TAU_RATE, Schedule, parse_schedule
from conftest import BUNDLED


def test_sga_plus_schedule_starts_at_one_and_decays():
    assert temperature(0, method="ssl") == 1.0
    assert math.isclose(temperature(1000, method="linear"), math.exp(-1))


def test_atanh_schedule_holds_at_half_until_about_700():
    assert temperature(0, method="atanh") == 0.5
    assert temperature(690, method="atanh") == 0.5
    assert temperature(700, method="atanh") < 0.5  # exp(-0.7) = 0.497


def test_danneal_schedule():
    assert temperature(0, method="danneal") == 0.2
    assert math.isclose(temperature(1000, method="danneal"), math.exp(-4))
    assert temperature(10**6, method="danneal") == 1e-8


def test_rate_and_cap_are_configurable():
    assert math.isclose(temperature(100, method="ssl", rate=6.7e-3), math.exp(-0.67))
    assert temperature(0, method="ssl", tau_max=0.3) == 0.3


def test_paper_schedule_is_the_temperature_of_the_paper():
    paper = parse_schedule("paper")
    for t in (0, 7, 690, 1500, 10**6):
        for method in ("ssl", "atanh", "danneal"):
            expected = temperature(t, method=method, tau_max=TAU_MAX.get(method, 1.0))
            got = paper.temperature(torch.tensor(t), 300, method=method,
                                    tau_max=TAU_MAX.get(method, 1.0), rate=1e-3)
            assert float(got) == pytest.approx(expected, rel=1e-6)
        assert paper.learning_rate(t, 300, 5e-3) == 5e-3


@pytest.mark.parametrize("decay, halfway", [
    ("exp", math.sqrt(0.04)),  # linear in log tau: the geometric mean
    ("cosine", math.sqrt(0.04)),  # a half cosine in log tau passes the middle there too
    ("linear", (1 + 0.04) / 2),
])
def test_budget_tau_spans_the_run_whatever_its_length(decay, halfway):
    for iters in (100, 2000):
        s = Schedule(kind="budget", tau_end=0.04, decay=decay)
        def tau(t):
            return s.temperature(t, iters, method="ssl", tau_max=1.0, rate=1e-3)
        assert tau(0) == pytest.approx(1.0)
        assert tau(iters // 2) == pytest.approx(halfway, rel=1e-5)
        assert tau(iters) == pytest.approx(0.04, rel=1e-5)
    quarter = Schedule(kind="budget", tau_end=0.04, decay="cosine").temperature(
        25, 100, method="ssl", tau_max=1.0, rate=1e-3)
    assert quarter == pytest.approx(0.04 ** ((1 - math.cos(math.pi / 4)) / 2), rel=1e-5)


def test_budget_final_phase_and_cap():
    s = Schedule(kind="budget", tau_end=0.1, final=0.2, final_tau=0.003)
    assert s.temperature(79, 100, method="ssl", tau_max=1.0, rate=0) > 0.1
    assert s.temperature(80, 100, method="ssl", tau_max=1.0, rate=0) == pytest.approx(0.003)
    assert s.temperature(99, 100, method="ssl", tau_max=1.0, rate=0) == pytest.approx(0.003)
    assert s.temperature(0, 100, method="atanh", tau_max=0.5, rate=0) == 0.5


def test_budget_learning_rate_warms_up_then_falls_to_its_floor():
    s = Schedule(kind="budget", lr=0.01, warmup=0.1, floor=0.2)
    lrs = [s.learning_rate(t, 100, 0.01) for t in range(100)]
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)
    assert lrs[10] == pytest.approx(0.01)
    assert lrs[55] == pytest.approx(0.01 * (0.2 + 0.8 * 0.5))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] > 0.002


def test_schedules_read_back_as_written():
    for text in ("paper", "budget", "budget:tau_end=0.02", "paper:lr=0.01",
                 "budget:decay=cosine,final=0.1"):
        assert parse_schedule(parse_schedule(text).describe()) == parse_schedule(text)
    assert parse_schedule("budget:tau_end=0.02").describe() == "budget:tau_end=0.02"


@pytest.mark.parametrize("text, message", [
    ("fast", "unknown schedule 'fast'"),
    ("budget:tau_end", "is not field=value"),
    ("budget:kind=paper", "is not field=value"),
    ("budget:tau_end=x", "tau_end must be a number"),
    ("budget:tau_end=0", "tau_end must be a finite number > 0"),
    ("budget:decay=step", "decay must be one of exp, cosine, linear"),
    ("budget:warmup=1", "warmup must be in [0, 1)"),
])
def test_bad_schedules_are_refused(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_schedule(text)


def test_the_default_is_the_budget_schedule_and_a_tau_rate_chooses_the_papers():
    """The budget preset unless told; --tau-rate (a paper-schedule setting) alone means paper."""
    budget, paper = parse_schedule("budget"), parse_schedule("paper")
    default = RefineConfig()
    assert default.schedule == budget and default.lr == budget.lr == 4e-2
    assert default.tau_rate is None
    for cfg in (RefineConfig(tau_rate=3e-3), default.with_options(tau_rate=3e-3),
                RefineConfig.for_method("linear", tau_rate=3e-3)):
        assert cfg.schedule == paper and cfg.tau_rate == 3e-3 and cfg.lr == 5e-3
    assert RefineConfig(schedule=paper) == RefineConfig(tau_rate=TAU_RATE)
    with pytest.raises(SgafastError, match="tau_rate"):
        RefineConfig(schedule=budget, tau_rate=3e-3)
    with pytest.raises(SgafastError, match="tau_rate"):
        default.with_options(schedule=budget, tau_rate=3e-3)


def test_the_command_line_says_which_schedule_it_runs(tmp_path, capsys):
    """The record states the schedule: budget by default, paper under --tau-rate; --schedule
    paper and --tau-rate 1e-3 run the same trajectory to the bit."""
    image = str(BUNDLED[0])
    runs = {"default": [], "paper": ["--schedule", "paper"], "rate": ["--tau-rate", "1e-3"]}
    for name, options in runs.items():
        assert main(["refine", image, "-o", str(tmp_path / name), "--iters", "6",
                     "--track-every", "0", "--quiet", *options]) == 0
    record = {name: json.loads(next((tmp_path / name).glob("*.json")).read_text())
              for name in runs}
    bits = {name: next((tmp_path / name).glob("*.bin")).read_bytes() for name in runs}
    assert record["default"]["schedule"] == "budget"
    assert record["paper"]["schedule"] == record["rate"]["schedule"] == "paper"
    assert bits["paper"] == bits["rate"]
    assert main(["refine", image, "-o", str(tmp_path / "both"), "--schedule", "budget",
                 "--tau-rate", "1e-3", "--iters", "1"]) == 2
    assert "tau_rate" in capsys.readouterr().err
