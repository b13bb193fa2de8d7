"""A plain CompressAI net given to the Python API: left as it was given, and what refinement
needs (updated CDFs, a [0, 1] float image, a lambda) checked up front in Python's words."""

import pytest
import torch
from compressai.models import MeanScaleHyperprior

import sgafast
from sgafast.errors import SgafastError

FAST = dict(iters=3, track_every=0, compile=False)


def plain_net(update=True):
    torch.manual_seed(0)
    net = MeanScaleHyperprior(16, 24)
    if update:
        net.update(force=True)
    return net


def test_a_plain_net_is_left_as_it_was_given(kodak_crops):
    net = plain_net()
    net.train()
    flags = [p.requires_grad for p in net.parameters()]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    (res,) = sgafast.refine(net, kodak_crops[0], lmbda=0.01, **FAST)
    assert net.training and [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert len(res.relaxed_loss) == FAST["iters"]
    data = sgafast.bitstream.encode(net, res.latents, res.geometry)  # a plain net codes too
    assert sgafast.bitstream.decode(net, data).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("case,message", [
    ("not updated", "call net.update"),
    ("8-bit values", r"in \[0, 1\]"),
    ("no lambda", "give lmbda="),
])
def test_what_refinement_needs_is_checked_before_any_work(kodak_crops, case, message):
    net = plain_net(update=case != "not updated")
    x = kodak_crops[0] * 255 if case == "8-bit values" else kodak_crops[0]
    options = {} if case == "no lambda" else {"lmbda": 0.01}
    with pytest.raises(SgafastError, match=message) as err:
        sgafast.refine(net, x, **options, **FAST)
    assert "--" not in str(err.value).split("(")[0]  # Python words, not the CLI's
