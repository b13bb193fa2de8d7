"""Temperature schedules of docs/method.md §4."""

import math

from sgafast import temperature


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
