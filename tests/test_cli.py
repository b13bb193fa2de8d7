"""The sgafast command line end to end, into a temporary folder."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import sgafast
from sgafast.cli import main
from sgafast.images import read_image
from sgafast.metrics import psnr
from conftest import BUNDLED

RECORD_KEYS = {"source", "model", "method", "iterations", "lmbda", "bpp", "bpp_likelihood", "psnr",
               "ms_ssim", "rd_loss", "seconds", "base"}


@pytest.fixture(scope="module")
def refined_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("refined")
    inputs = tmp_path_factory.mktemp("inputs")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    rc = main(["refine", *map(str, BUNDLED), str(inputs / "broken.png"), "-o", str(out),
               "--iters", "12", "--batch-size", "2", "--track-every", "4", "--quiet"])
    return out, rc


def test_refine_writes_records_and_bitstreams(refined_dir):
    out, rc = refined_dir
    assert rc == 1  # one input was bad
    assert not (out / "broken.json").exists() and not list(out.glob(".*.tmp"))
    for path in BUNDLED:
        record = json.loads((out / f"{path.stem}.json").read_text())
        assert RECORD_KEYS <= set(record)
        assert record["iterations"] == 12 and record["method"] == "ssl"
        size = (out / f"{path.stem}.bin").stat().st_size
        pixels = 256 * 256
        assert record["bpp"] == pytest.approx(8 * size / pixels)
        assert record["base"]["bpp"] == pytest.approx(8 * record["base"]["bytes"] / pixels)
        assert record["rd_loss"] < record["base"]["rd_loss"]
        assert [t for t, _ in record["history"]["true_loss"]] == [0, 4, 8, 12]


def test_decode_reproduces_the_recorded_psnr(refined_dir, tmp_path):
    out, _ = refined_dir
    for path in BUNDLED:
        record = json.loads((out / f"{path.stem}.json").read_text())
        png = tmp_path / f"{path.stem}.png"
        assert main(["decode", str(out / f"{path.stem}.bin"), "-o", str(png)]) == 0
        decoded, original = read_image(png), read_image(path)
        assert psnr(original[None], decoded[None]) == pytest.approx(record["psnr"], abs=1e-9)


def test_summary_has_eval_model_schema(refined_dir):
    out, _ = refined_dir
    summary = json.loads((out / "_sgafast" / "summary.json").read_text())
    assert {"name", "description", "results"} <= set(summary)
    for key in ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time"):
        assert len(summary["results"][key]) == 1
    records = [json.loads((out / f"{p.stem}.json").read_text()) for p in BUNDLED]
    assert summary["results"]["bpp"][0] == pytest.approx(sum(r["bpp"] for r in records) / 2)


def test_rerun_skips_finished_images_and_says_so(refined_dir, capsys):
    out, _ = refined_dir
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    assert main(["refine", *map(str, BUNDLED), "-o", str(out), "--iters", "12",
                 "--batch-size", "2", "--track-every", "4"]) == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"sgafast: 2 of 2 images already done in {out}, skipped"
    assert lines[-1].startswith(f"sgafast: 2 images: 0 done, 2 skipped (already done in {out}), "
                                "0 failed; summary in")


def test_a_log_gets_a_line_per_image_and_no_bar(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["refine", *map(str, BUNDLED), str(tmp_path / "broken.png"), "-o",
            str(tmp_path / "o"), "--iters", "2", "--track-every", "0", "--no-compile"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err and "refine [" not in err
    lines = err.splitlines()
    assert lines[0] == "sgafast: refining 3 of 3 images [ssl]"
    assert lines[1].startswith("sgafast: [1/3] broken.png: failed: cannot read the image")
    for k, path in enumerate(BUNDLED, 2):
        assert lines[k].startswith(f"sgafast: [{k}/3] {path.name}: ") and " bpp, " in lines[k]
    assert main(args) == 1  # the rerun says what it skips, at once
    assert capsys.readouterr().err.splitlines()[0] == (
        f"sgafast: refining 1 of 3 images [ssl]; 2 of 3 images already done in "
        f"{tmp_path / 'o'}, skipped")


def test_a_terminal_gets_a_bar_and_no_lines(tmp_path, capsys, monkeypatch):
    from sgafast import progress

    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    assert main(["refine", str(BUNDLED[0]), "-o", str(tmp_path), "--method", "none"]) == 0
    err = capsys.readouterr().err
    assert "refine [none]" in err and "100%" in err and "[1/1]" not in err


def test_method_none_is_the_base_codec(tmp_path):
    assert main(["refine", str(BUNDLED[0]), "-o", str(tmp_path), "--method", "none",
                 "--quiet"]) == 0
    record = json.loads((tmp_path / f"{BUNDLED[0].stem}.json").read_text())
    assert record["iterations"] == 0
    for key in ("bpp", "psnr", "rd_loss"):
        assert record[key] == record["base"][key]


def test_odd_sized_image_round_trips(tmp_path):
    img = Image.open(BUNDLED[1]).crop((3, 5, 3 + 77, 5 + 45))
    img.save(tmp_path / "odd.png")
    assert main(["refine", str(tmp_path / "odd.png"), "-o", str(tmp_path / "o"), "--iters", "3",
                 "--quiet"]) == 0
    assert main(["decode", str(tmp_path / "o" / "odd.bin"), "-o", str(tmp_path / "d.png")]) == 0
    assert Image.open(tmp_path / "d.png").size == (77, 45)


@pytest.mark.parametrize("args,message", [
    (["--model", "{tmp}/garbage.pt"], "garbage.pt"),
    (["--method", "atanh", "--classes", "3"], "three-class"),
])
def test_bad_parameters_fail_with_a_message(tmp_path, capsys, args, message):
    (tmp_path / "garbage.pt").write_text("nope")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["refine", str(BUNDLED[0]), "-o", str(tmp_path / "o"), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_mistyped_path_is_refused_before_any_work(tmp_path, capsys):
    rc = main(["refine", str(tmp_path / "nope.png"), str(BUNDLED[0]), "-o", str(tmp_path / "o"),
               "--method", "none", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err == f"sgafast: error: {tmp_path / 'nope.png'}: no such file or folder\n"
    assert not list((tmp_path / "o").iterdir())


def test_decode_refuses_a_corrupt_file(tmp_path, capsys):
    (tmp_path / "x.bin").write_bytes(os.urandom(100))
    assert main(["decode", str(tmp_path / "x.bin"), "-o", str(tmp_path / "x.png")]) == 2
    assert "x.bin" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_record_says_how_the_image_was_read(tmp_path):
    """A 16-bit grayscale PNG with EXIF orientation 6: scaled, turned, and recorded."""
    import numpy as np

    values = (np.arange(40 * 70, dtype=np.uint16).reshape(40, 70) * 23).astype(np.uint16)
    img = Image.fromarray(values)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "gray16.png", exif=exif)
    assert main(["refine", str(tmp_path / "gray16.png"), "-o", str(tmp_path / "o"),
                 "--method", "none", "--quiet"]) == 0
    record = json.loads((tmp_path / "o" / "gray16.json").read_text())
    assert record["conversion"]["exif_orientation"] == 6 and "scaled" in record["conversion"]
    assert main(["decode", str(tmp_path / "o" / "gray16.bin"), "-o", str(tmp_path / "d.png")]) == 0
    assert Image.open(tmp_path / "d.png").size == (40, 70)  # turned a quarter: portrait


def test_refine_help_has_a_description_and_every_default():
    from sgafast.cli import build_parser

    refine = build_parser()._subparsers._group_actions[0].choices["refine"]
    assert "rate-distortion" in refine.description
    for action in refine._actions:
        if action.option_strings and not action.required and action.dest != "help":
            assert "default" in action.help, action.option_strings


def test_python_dash_m_sgafast_runs_the_command_line():
    """``python -m sgafast`` (what ``torchrun -m sgafast`` runs) is the CLI, with a version."""
    proc = subprocess.run([sys.executable, "-m", "sgafast", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"sgafast {sgafast.__version__}"
    proc = subprocess.run([sys.executable, "-m", "sgafast", "refine", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--batch-size" in proc.stdout
