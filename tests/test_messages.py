"""Bad options and paths are refused up front with one line naming the option or the path."""

from pathlib import Path

import pytest

from sgafast.cli import main

IMAGE = sorted((Path(__file__).resolve().parents[1] / "sgafast" / "data" / "images")
               .glob("*.png"))[0]


@pytest.mark.parametrize("option,value", [
    ("--tau-rate", "nan"), ("--tau-rate", "-100"), ("--tau-max", "0"), ("--lr", "inf"),
    ("--lmbda", "inf"), ("--iters", "-1"), ("--batch-size", "0"), ("--r", "1.5"),
    ("--a", "abc"), ("--a", "-1"), ("--lmbda", "0"),
])
def test_impossible_numbers_name_their_option(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        main(["refine", str(IMAGE), "-o", str(tmp_path), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["afile", "afile/sub"])
def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, capsys, output):
    (tmp_path / "afile").write_text("")
    assert main(["refine", str(IMAGE), "-o", str(tmp_path / output), "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1


def test_tau_rate_zero_says_that_tau_stays_fixed(tmp_path, capsys):
    assert main(["refine", str(IMAGE), "-o", str(tmp_path), "--iters", "1", "--tau-rate", "0",
                 "--track-every", "0", "--quiet"]) == 0
    assert "no annealing" in capsys.readouterr().err


@pytest.mark.parametrize("command,option,value", [
    ("eval", "--limit", "0"), ("eval", "--crop", "-64"), ("eval", "--jpeg", "10,abc"),
    ("eval", "--jpeg", "0,50"), ("train", "--steps", "0"), ("train", "--N", "1.5"),
    ("train", "--M", "0"), ("train", "--crop", "x"), ("train", "--batch-size", "0"),
])
def test_every_numeric_option_of_eval_and_train_names_itself(tmp_path, capsys, command, option,
                                                             value):
    with pytest.raises(SystemExit) as exit_:
        main([command, str(IMAGE.parent), "-o", str(tmp_path / "e"), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_eval_refuses_a_missing_dataset(tmp_path, capsys):
    assert main(["eval", "missing-folder", "-o", str(tmp_path / "e"), "--iters", "1"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not list((tmp_path / "e").glob("*.json"))


def test_a_random_file_is_not_a_checkpoint_and_no_unsafe_advice(tmp_path, capsys):
    bad = tmp_path / "random.pt"
    bad.write_bytes(bytes(range(256)) * 4)
    assert main(["refine", str(IMAGE), "-o", str(tmp_path / "o"), "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a model checkpoint" in err and "weights_only" not in err


def test_eval_has_the_overwrite_its_refusal_offers():
    """A changed setting's refusal says "or --overwrite": eval accepts it, as refine does."""
    from sgafast.cli import build_parser

    for command in ("refine", "eval"):
        assert build_parser().parse_args([command, "x", "-o", "o", "--overwrite"]).overwrite


def test_an_empty_folder_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["refine", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"sgafast: error: {tmp_path / 'empty'}: no images in this folder\n"
    assert not list((tmp_path / "o").iterdir())


@pytest.mark.parametrize("value", ["abc", "0", "inf"])
def test_a_bad_rank_timeout_is_refused_before_any_work(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("SGAFAST_RANK_TIMEOUT", value)
    assert main(["refine", str(IMAGE), "-o", str(tmp_path / "o")]) == 2
    assert f"SGAFAST_RANK_TIMEOUT={value}: give a number of seconds > 0" in capsys.readouterr().err
