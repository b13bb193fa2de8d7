"""The reference soft rounding against docs/method.md §2: closed forms, gradients, edge cases."""

import math

import pytest
import torch

from closed_forms import binomial_bound, p_up_closed_form
from helpers import GUMBEL
from sgafast import gumbel_noise, sga_round
from sgafast.errors import SgafastError
from sgafast.ops import reference
from sgafast.ops.rounding import DEFAULT_A, THREE_CLASS_METHODS, TWO_CLASS_METHODS


@pytest.mark.parametrize("method", TWO_CLASS_METHODS)
def test_two_class_p_up_matches_closed_form_by_sampling(method):
    fractions = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    samples = 20000
    v = (torch.arange(5, dtype=torch.float64).repeat_interleave(samples) * 3 - 7
         + fractions.repeat_interleave(samples))
    *_, f = reference.candidates_and_log_weights(v, method=method, classes=2, a=2.3, r=1, n=1)
    g = gumbel_noise(v.shape, seed=11, classes=2).double()
    went_up = (f + g).argmax(-1).double().reshape(5, samples).mean(1)
    expected = p_up_closed_form(method, fractions)
    bound = binomial_bound(expected, samples)
    assert ((went_up - expected).abs() <= bound).all(), (went_up, expected)


@pytest.mark.parametrize("method", THREE_CLASS_METHODS)
def test_three_class_frequencies_match_weights(method):
    """At tau = 1 the candidate chosen by argmax(l + g) has probability softmax(g(d))."""
    c = torch.tensor([-0.4, -0.1, 0.0, 0.25, 0.45], dtype=torch.float64)
    samples = 20000
    v = 5 + c.repeat_interleave(samples)
    d = c.unsqueeze(-1) - torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    r, n, a = 0.98, 1.5, 1.4
    if method == "linear":
        weight = (1 - r * d.abs()).clamp_min(1e-6) ** n
    elif method == "cosine":
        weight = torch.cos(math.pi / 2 * (r * d).clamp(-1, 1)).clamp_min(0) ** n + 1e-7
    else:
        u = (r * d / 1.5).abs().clamp(1e-6, 1 - 1e-6)
        weight = torch.sigmoid(-a * torch.log(u / (1 - u))).clamp_min(1e-6) ** n
    expected = weight / weight.sum(-1, keepdim=True)
    *_, f = reference.candidates_and_log_weights(v, method=method, classes=3, a=a, r=r, n=n)
    g = gumbel_noise(v.shape, seed=5, classes=3).double()
    chosen = torch.nn.functional.one_hot((f + g).argmax(-1), 3).double()
    freq = chosen.reshape(5, samples, 3).mean(1)
    bound = binomial_bound(expected, samples) + 1e-12
    assert ((freq - expected).abs() <= bound).all(), (freq, expected)


@pytest.mark.parametrize("method,classes", GUMBEL)
def test_gradcheck_v_and_center(method, classes):
    torch.manual_seed(0)
    v = (torch.rand(24, dtype=torch.float64) * 8 - 4).requires_grad_()
    c = (torch.rand(24, dtype=torch.float64) - 0.5).requires_grad_()
    noise = gumbel_noise(v.shape, seed=1, classes=classes).double()

    def f(v, c):
        return sga_round(v, 0.7, method=method, classes=classes, center=c, noise=noise,
                         backend="torch")

    assert torch.autograd.gradcheck(f, (v, c), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("method", TWO_CLASS_METHODS)
def test_exact_integers_map_to_themselves(method):
    v = torch.tensor([-1e4, -3.0, -1.0, 0.0, 1.0, 2.0, 17.0, 1e4])
    for seed in range(5):
        assert torch.equal(sga_round(v, 0.3, method=method, seed=seed, backend="torch"), v)


@pytest.mark.parametrize("method,classes", GUMBEL)
@pytest.mark.parametrize("tau", [1e-3, 0.05, 1.0])
def test_finite_on_extreme_inputs(method, classes, tau):
    v = torch.cat([torch.linspace(-1e4, 1e4, 2001), torch.tensor([-0.5, 0.5, 1.5, -2.5]),
                   torch.arange(-5.0, 6.0), torch.arange(-5.0, 6.0) + 1e-6,
                   torch.arange(-5.0, 6.0) - 1e-6]).requires_grad_()
    out = sga_round(v, tau, method=method, classes=classes, seed=9, backend="torch")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(v.grad).all()
    assert ((out - v).abs() <= 1.5 + 1e-3).all()  # a convex combination of nearby integers


def test_three_class_cosine_stays_finite_with_fractional_n():
    # the authors' code gives NaN here: cos(pi/2) = -4.4e-8 in float32, to the power 1.5
    v = (torch.rand(10000) * 20 - 10).requires_grad_()
    out = sga_round(v, 0.5, method="cosine", classes=3, n=1.5, seed=0, backend="torch")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(v.grad).all()
    v2 = torch.tensor([0.0, 0.5, -0.5, 3.0], requires_grad=True)
    sga_round(v2, 0.5, method="cosine", classes=3, n=0.5, seed=0, backend="torch").sum().backward()
    assert torch.isfinite(v2.grad).all()


def test_ssl_with_a_one_equals_linear():
    v = torch.rand(1000, dtype=torch.float64) * 10 - 5
    noise = gumbel_noise(v.shape, seed=2, classes=2).double()
    ssl = sga_round(v, 0.5, method="ssl", a=1.0, noise=noise, backend="torch")
    linear = sga_round(v, 0.5, method="linear", noise=noise, backend="torch")
    assert torch.allclose(ssl, linear, atol=1e-4)  # they differ only by the eps clamp


def test_temperature_enters_twice():
    v = torch.tensor([0.3], dtype=torch.float64)
    noise = torch.tensor([[0.2, -0.1]], dtype=torch.float64)
    tau = 0.5
    f_down, f_up = math.log(1 - 0.3), math.log(1 - 0.7)
    logit_up = ((f_up / tau + noise[0, 1]) - (f_down / tau + noise[0, 0])) / tau
    expected = 1 / (1 + math.exp(-logit_up))
    out = sga_round(v, tau, method="linear", noise=noise, backend="torch")
    assert abs(out.item() - expected) < 1e-12


def test_baselines():
    v = torch.tensor([0.2, 1.7, -2.5], requires_grad=True)
    ste = sga_round(v, 1.0, method="ste")
    assert torch.equal(ste, torch.round(v))
    ste.sum().backward()
    assert torch.equal(v.grad, torch.ones(3))
    u = torch.tensor([[0.0], [0.5], [0.9]])
    assert torch.allclose(sga_round(v, 1.0, method="noise", noise=u), v + u[:, 0] - 0.5)
    da = sga_round(v, 1e-3, method="danneal")  # near-hard at low temperature
    assert torch.allclose(da, torch.tensor([0.0, 2.0, -2.5]), atol=1e-3)


def test_default_a_depends_on_class_count():
    assert DEFAULT_A == {2: 2.3, 3: 1.4}
    v = torch.rand(100) * 4
    noise = gumbel_noise(v.shape, seed=0, classes=3)
    assert torch.equal(sga_round(v, 0.5, method="ssl", classes=3, noise=noise),
                       sga_round(v, 0.5, method="ssl", classes=3, a=1.4, noise=noise))


@pytest.mark.parametrize("kwargs", [
    dict(method="round"), dict(classes=4), dict(method="atanh", classes=3),
    dict(a=-1.0), dict(r=0.0), dict(r=1.5), dict(n=float("nan")), dict(backend="cuda"),
])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(SgafastError):
        sga_round(torch.rand(3), 0.5, **kwargs)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("inf")])
def test_bad_temperature_is_refused(tau):
    with pytest.raises(SgafastError):
        sga_round(torch.rand(3), tau)


def test_noise_shape_is_checked():
    with pytest.raises(SgafastError, match="shape"):
        sga_round(torch.rand(3), 0.5, noise=torch.zeros(3, 3))
