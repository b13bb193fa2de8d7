"""``sgafast eval`` on tiny inputs: files exist and parse, BD numbers match a hand computation."""

import json
from pathlib import Path

import bjontegaard as bd
import pytest
import torch
from PIL import Image

from sgafast import models
from sgafast.cli import main
from sgafast.errors import SgafastError
from sgafast.evaluate import MethodSpec, parse_methods
from conftest import BUNDLED


def finer_quantisation(net, s):
    """The same codec with latents scaled by s: a finer quantiser, a second R-D point."""
    with torch.no_grad():
        for layer, factor in ((net.g_a[-1], s), (net.h_s[-1], s)):
            layer.weight.mul_(factor)
            layer.bias.mul_(factor)
        net.g_s[0].weight.div_(s)
        net.h_a[0].weight.div_(s)
    return net


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    data.mkdir()
    for p in BUNDLED:
        Image.open(p).save(data / p.name)
    models.save(root / "high.pt", finer_quantisation(models.load("default").net, 1.6),
                lmbda=0.02, dtype=torch.float32)
    out = root / "out"
    args = ["eval", str(data), "-o", str(out), "--methods", "none,ssl,linear:3",
            "--models", f"default,{root / 'high.pt'}", "--iters", "6", "--crop", "64",
            "--track-every", "2", "--batch-size", "2", "--jpeg", "20,50,80", "--quiet"]
    assert main(args) == 0
    return out, args


def test_files_exist_and_parse(evaluated):
    out, _ = evaluated
    for label in ("none", "ssl", "linear-3c", "jpeg"):
        doc = json.loads((out / f"{label}.json").read_text())
        assert {"name", "description", "results"} <= set(doc)
        n = 3 if label == "jpeg" else 2
        assert all(len(doc["results"][k]) == n for k in ("bpp", "psnr-rgb", "ms-ssim-rgb"))
    assert (out / "bd.md").read_text().count("| ssl |") == 1
    for png in ("rd.png", "convergence.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "inputs").glob("*.png"))) == 2


def test_curves_are_means_of_the_per_image_records(evaluated):
    out, _ = evaluated
    doc = json.loads((out / "ssl.json").read_text())
    for i, model_dir in enumerate(doc["models"]):
        records = [json.loads(p.read_text()) for p in
                   sorted((out / "runs" / "ssl" / Path(model_dir).name).glob("*.json"))]
        assert len(records) == 2
        assert doc["results"]["bpp"][i] == pytest.approx(sum(r["bpp"] for r in records) / 2)
        assert doc["results"]["psnr-rgb"][i] == pytest.approx(sum(r["psnr"] for r in records) / 2)


def test_bd_table_matches_the_bjontegaard_package(evaluated):
    out, _ = evaluated
    none = json.loads((out / "none.json").read_text())
    rows = {r["method"]: r for r in json.loads((out / "bd.json").read_text())}
    for label in ("ssl", "linear-3c"):
        doc = json.loads((out / f"{label}.json").read_text())
        args = (none["results"]["bpp"], none["results"]["psnr-rgb"], doc["results"]["bpp"],
                doc["results"]["psnr-rgb"])
        assert rows[label]["bd_rate_bpp"] is not None
        assert rows[label]["bd_rate_bpp"] == pytest.approx(
            bd.bd_rate(*args, method="akima", min_overlap=0))
        assert rows[label]["bd_psnr_bpp"] == pytest.approx(
            bd.bd_psnr(*args, method="akima", min_overlap=0))
        lik = (none["bpp-likelihood"], none["results"]["psnr-rgb"], doc["bpp-likelihood"],
               doc["results"]["psnr-rgb"])
        assert rows[label]["bd_psnr_likelihood"] == pytest.approx(
            bd.bd_psnr(*lik, method="akima", min_overlap=0))


def test_rerun_resumes_without_recomputing(evaluated):
    out, args = evaluated
    bins = sorted((out / "runs").rglob("*.bin"))
    before = [p.stat().st_mtime_ns for p in bins]
    assert main(args) == 0
    assert before == [p.stat().st_mtime_ns for p in bins]


def test_base_codec_alone_needs_no_convergence_plot(tmp_path):
    assert main(["eval", str(BUNDLED[0]), "-o", str(tmp_path), "--methods", "none",
                 "--models", "default", "--crop", "64", "--quiet"]) == 0
    assert (tmp_path / "rd.png").is_file() and not (tmp_path / "convergence.png").exists()


def test_method_specs():
    assert parse_methods("ssl,linear:3") == [MethodSpec("none", 2), MethodSpec("ssl", 2),
                                             MethodSpec("linear", 3)]
    assert parse_methods("none,cosine", default_classes=3)[1] == MethodSpec("cosine", 3)
    assert parse_methods("atanh", default_classes=3)[1] == MethodSpec("atanh", 2)
    ste = parse_methods("ste@1e-4")[1]
    assert (ste.lr, ste.label) == (1e-4, "ste-lr0.0001")
    for bad in ("atanh:3", "bogus", "ssl:4", ",", "ste@0", "ste@fast"):
        with pytest.raises(SgafastError):
            parse_methods(bad)


def test_eval_last_line_counts_and_names_its_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", str(BUNDLED[0]), "-o", str(out), "--methods", "none", "--models",
                 "default", "--crop", "64", "--quiet"]) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("sgafast: eval of 1 methods x 1 models: 1 results: 1 done, 0 skipped, "
                           "0 failed")
    assert f"BD table in {out / 'bd.md'}, plots in {out / 'rd.png'}" in last
