"""``sgafast train``: a model comes out, loads, and an interrupted run resumes exactly."""

from pathlib import Path

import pytest
import torch

from sgafast import models, train
from sgafast.cli import main
from sgafast.errors import SgafastError

IMAGES = Path(__file__).resolve().parents[1] / "sgafast" / "data" / "images"
TINY = ["--N", "8", "--M", "12", "--crop", "64", "--batch-size", "2", "--steps", "5"]


def test_train_writes_a_loadable_model_and_says_where(tmp_path, capsys):
    assert main(["train", str(IMAGES), "-o", str(tmp_path / "m.pt"), *TINY]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"sgafast: trained mbt2018-mean for 5 steps (0 skipped for a non-finite loss); model "
        f"written to {tmp_path / 'm.pt'}, training state to {tmp_path / 'm.pt.train-state'} "
        "(--resume continues from it)")
    model = models.load(tmp_path / "m.pt")
    assert model.lmbda == 0.0067 and model.describe()["N"] == 8 and model.describe()["M"] == 12
    meta = torch.load(tmp_path / "m.pt", weights_only=True)["training"]
    assert meta["steps"] == 5


def test_interrupted_training_resumes_exactly(tmp_path, monkeypatch):
    assert main(["train", str(IMAGES), "-o", str(tmp_path / "straight.pt"), *TINY]) == 0
    calls = {"n": 0}
    real_batch = train.CropSampler.batch

    def crash_on_fourth_batch(self, size):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_batch(self, size)

    cfg = train.TrainConfig(n=8, m=12, crop=64, batch_size=2, steps=5, save_every=3)
    monkeypatch.setattr(train.CropSampler, "batch", crash_on_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        train.train(IMAGES, tmp_path / "resumed.pt", cfg)
    monkeypatch.setattr(train.CropSampler, "batch", real_batch)
    train.train(IMAGES, tmp_path / "resumed.pt", cfg, resume=True)
    a = torch.load(tmp_path / "straight.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_training_inputs(tmp_path):
    with pytest.raises(SgafastError, match="no images"):
        train.train(tmp_path, tmp_path / "m.pt", train.TrainConfig(steps=1))
    with pytest.raises(SgafastError, match="no training state"):
        train.train(IMAGES, tmp_path / "m.pt", train.TrainConfig(steps=1), resume=True)


def test_a_non_finite_batch_is_skipped(tmp_path, monkeypatch):
    real_loss, calls = train.rd_loss, {"n": 0}

    def inf_on_second_step(net, x, lmbda, distortion):
        calls["n"] += 1
        loss, parts = real_loss(net, x, lmbda, distortion)
        return (loss * float("inf") if calls["n"] == 2 else loss), parts

    monkeypatch.setattr(train, "rd_loss", inf_on_second_step)
    train.train(IMAGES, tmp_path / "m.pt", train.TrainConfig(n=8, m=12, crop=64, batch_size=2,
                                                             steps=3))
    state = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("groups,message", [
    ([], "CompressAI's default channel groups (16,16,32,64,M-128) need M > 128; give --groups, "
         "channel counts summing to 12, e.g. --groups 1,1,2,4,4"),
    (["--groups", "8,8"], "--groups 8,8 sums to 16, not --M 12; e.g. --groups 1,1,2,4,4"),
])
def test_elic_without_fitting_groups_says_what_to_pass(tmp_path, capsys, groups, message):
    args = ["train", str(IMAGES), "-o", str(tmp_path / "m.pt"), "--arch", "elic2022-official"]
    assert main([*args, *TINY, *groups]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
