"""Runs at dataset scale: folders and lists, mirrored outputs, crash-safe resume, ranks."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from sgafast.cli import main
from sgafast.inputs import collect
from conftest import BUNDLED

FAST = ["--iters", "3", "--track-every", "0", "--quiet", "--no-compile"]


def crops(folder: Path, names: list[str], size=(96, 64)) -> list[Path]:
    """Small distinct crops of the bundled images at ``folder/name``."""
    paths = []
    for i, name in enumerate(names):
        img = Image.open(BUNDLED[i % len(BUNDLED)]).crop((8 * i, 8 * i, 8 * i + size[0],
                                                          8 * i + size[1]))
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        paths.append(path)
    return paths


def bins(outdir: Path) -> dict:
    return {p.relative_to(outdir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(outdir.rglob("*.bin"))}


def test_folders_lists_and_files_are_one_sorted_list(tmp_path):
    data = tmp_path / "data"
    crops(data, ["a/0001.png", "b/0001.png", "c.png"])
    (data / "notes.txt").write_text("not an image")
    os.symlink(data, data / "a" / "loop")  # a link back up: followed once, never forever
    listing = tmp_path / "list.txt"
    listing.write_text("data/c.png\n# a comment\n\ndata/missing.png\n")
    items, refused = collect([str(data), f"@{listing}", str(data / "a" / "0001.png")])
    assert [i.name for i in items] == ["a/0001.png", "b/0001.png", "c.png"]
    assert any("missing" in source for source, _ in refused)


def test_list_entries_keep_their_folders_and_may_end_in_a_comment(tmp_path):
    crops(tmp_path, ["x/img.png", "y/img.png", "d/a.png", "far/f.png"])
    listing = tmp_path / "two.txt"
    listing.write_text(f"x/img.png  # the first\ny/img.png\nd\n{tmp_path / 'far' / 'f.png'}\n")
    items, refused = collect([f"@{listing}"])
    assert not refused
    assert [i.name for i in items] == ["d/a.png", "far/f.png", "x/img.png", "y/img.png"]


def test_outputs_mirror_the_input_tree_and_same_names_never_collide(tmp_path):
    data = tmp_path / "data"
    crops(data, ["a/0001.png", "b/0001.png"])
    assert main(["refine", str(data), "-o", str(tmp_path / "o"), *FAST]) == 0
    assert set(bins(tmp_path / "o")) == {"a/0001.bin", "b/0001.bin"}
    summary = json.loads((tmp_path / "o" / "_sgafast" / "summary.json").read_text())
    assert summary["images"] == 2 and summary["name"] == "sgafast-ssl"
    assert main(["merge", str(tmp_path / "o")]) == 0  # a merge by hand names it as the run did
    assert json.loads((tmp_path / "o" / "_sgafast" / "summary.json").read_text()) == summary
    lines = (tmp_path / "o" / "_sgafast" / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["name"] for line in lines) == ["a/0001.png", "b/0001.png"]
    # the same two files named one by one do collide: the second fails, named
    assert main(["refine", str(data / "a" / "0001.png"), str(data / "b" / "0001.png"),
                 "-o", str(tmp_path / "flat"), *FAST]) == 1


def test_resume_checks_content_settings_and_bitstream(tmp_path, capsys):
    data = tmp_path / "data"
    paths = crops(data, ["x.png", "y.png"])
    out = tmp_path / "o"
    assert main(["refine", str(data), "-o", str(out), *FAST]) == 0
    first = bins(out)
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert main(["refine", str(data), "-o", str(out), *FAST]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamp  # all skipped
    crops(data, ["y.png"], size=(80, 64))  # y's content changes: redone, x kept
    (out / "x.bin").write_bytes(b"damaged")  # a damaged bitstream: redone
    assert main(["refine", str(data), "-o", str(out), *FAST]) == 0
    assert bins(out)["x.bin"] == first["x.bin"] and bins(out)["y.bin"] != first["y.bin"]
    capsys.readouterr()
    other = ["--iters", "4", "--track-every", "0", "--quiet", "--no-compile"]
    assert main(["refine", str(data), "-o", str(out), *other]) == 2  # refused, never mixed
    err = capsys.readouterr().err
    assert "other settings" in err and "iters 3 there, 4 now" in err
    assert main(["refine", str(data), "-o", str(out), "--overwrite", *other]) == 0
    assert all(json.loads(p.read_text())["iterations"] == 4 for p in out.glob("*.json"))
    assert len(paths) == 2


def test_failures_are_recorded_and_retried(tmp_path):
    data = tmp_path / "data"
    crops(data, ["good.png"])
    (data / "bad.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "o"
    assert main(["refine", str(data), "-o", str(out), *FAST]) == 1
    failed = out / "_sgafast" / "failed" / "bad.json"
    assert "cannot read" in json.loads(failed.read_text())["reason"]
    crops(data, ["bad.png"])  # repaired: the rerun retries it and clears the record
    assert main(["refine", str(data), "-o", str(out), *FAST]) == 0
    assert (out / "bad.bin").is_file() and not failed.exists()


def test_the_last_line_counts_each_input_once_and_failed_holds_each_failure(tmp_path, capsys):
    """The issue's run: list entries sharing a file name, a missing entry, a broken image and
    a name collision; done + skipped + failed is every input, each failure a file in failed/."""
    crops(tmp_path, ["x/img.png", "y/img.png", "a/0001.png", "b/0001.png", "c/0001.png"])
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "two.txt").write_text("x/img.png\ny/img.png\nmissing.png\n")
    out = tmp_path / "o"
    args = ["refine", f"@{tmp_path / 'two.txt'}", str(tmp_path / "dir"),
            *(str(tmp_path / folder / "0001.png") for folder in "abc"), "-o", str(out), *FAST]
    for done, skipped in ((3, 0), (0, 3)):  # a rerun skips what is done, fails the rest again
        capsys.readouterr()
        assert main(args) == 1
        last = capsys.readouterr().err.splitlines()[-1]
        assert f"7 images: {done} done" in last and f", {skipped} skipped" in last
        assert f"4 failed (listed in {out / '_sgafast' / 'failed'})" in last
        failed = (out / "_sgafast" / "failed").rglob("*.json")
        assert sorted(Path(json.loads(f.read_text())["source"]).name for f in failed) == [
            "0001.png", "0001.png", "broken.png", "missing.png"]
    assert "already done in" in last


def test_outputs_get_the_users_umask(tmp_path):
    crops(tmp_path / "data", ["p.png"])
    old = os.umask(0o022)
    try:
        assert main(["refine", str(tmp_path / "data"), "-o", str(tmp_path / "o"), *FAST]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "o" / "p.bin").stat().st_mode & 0o777 == 0o644


def _run(args: list[str], env=os.environ, **kwargs) -> subprocess.CompletedProcess:
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.slow
def test_two_ranks_give_the_bitstreams_of_one(tmp_path):
    data = tmp_path / "data"
    crops(data, [f"{i}.png" for i in range(5)])
    one = _run([sys.executable, "-m", "sgafast.cli", "refine", str(data), "-o",
                str(tmp_path / "one"), *FAST])
    assert one.returncode == 0, one.stderr
    two = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", "29531", "-m", "sgafast.cli", "refine", str(data), "-o",
                str(tmp_path / "two"), *FAST])
    assert two.returncode == 0, two.stderr
    assert bins(tmp_path / "one") == bins(tmp_path / "two") and len(bins(tmp_path / "one")) == 5
    merged = json.loads((tmp_path / "two" / "_sgafast" / "summary.json").read_text())
    assert merged["images"] == 5


@pytest.mark.slow
def test_rank_0_counts_every_ranks_failures_and_torchrun_reports_no_crash(tmp_path):
    data = tmp_path / "data"
    crops(data, ["0.png"])
    (data / "1.png").write_bytes(b"\x89PNG not really")  # rank 1's item (items[1::2])
    (tmp_path / "list.txt").write_text("data/gone.png\n")  # refused: rank 0 records it
    run = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", "29532", "-m", "sgafast.cli", "refine", str(data),
                f"@{tmp_path / 'list.txt'}", "-o", str(tmp_path / "o"), *FAST])
    assert run.returncode == 0 and "ChildFailedError" not in run.stderr, run.stderr
    assert run.stderr.splitlines()[-1].startswith(
        "sgafast: all 2 ranks: 3 images: 1 done (0 compiled, 1 eager), 0 skipped, 2 failed")
    assert len(list((tmp_path / "o" / "_sgafast" / "failed").rglob("*.json"))) == 2


def _torchrun(tmp_path: Path, port: int, *args: str, env=None) -> list[str]:
    """A 2-rank run on one 256x256 image for a million iterations: rank 0 refines it, rank 1,
    with nothing to do, waits at the end at once."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(BUNDLED[0].read_bytes())
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", str(port), "-m", "sgafast.cli", "refine", str(data), "-o",
            str(tmp_path / "o"), "--iters", "1000000", "--track-every", "0", "--no-compile"]


def _end_workers_left(marker: str) -> None:
    """SIGKILL what is left of this test's processes (their command line names ``marker``)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except OSError:  # ended meanwhile
            pass


@pytest.mark.slow
def test_workers_end_soon_after_their_launcher_is_killed(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_torchrun(tmp_path, 29533), env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        seen = ""
        while "rank 0/2 refining" not in seen or "rank 1/2 0 images" not in seen:
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        time.sleep(1)
        proc.send_signal(signal.SIGKILL)  # the launcher only: its workers are orphaned
        tick = time.monotonic()
        _, rest = proc.communicate(timeout=60)  # the workers hold stderr until they end
    finally:
        _end_workers_left(str(tmp_path))
    assert time.monotonic() - tick < 60
    assert "rank 0/2 the torchrun launcher" in rest and "is gone; stopping" in rest
    assert "rank 1/2 waiting for the other ranks failed" in rest
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_the_final_wait_is_bounded_by_sgafast_rank_timeout(tmp_path):
    tick = time.monotonic()
    run = _run(_torchrun(tmp_path, 29534), env={**os.environ, "SGAFAST_RANK_TIMEOUT": "3"})
    assert time.monotonic() - tick < 120 and run.returncode != 0
    assert "did not all finish within SGAFAST_RANK_TIMEOUT=3 s" in run.stderr
    assert "sgafast: interrupted; finished images are written" in run.stderr  # rank 0, stopped


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    data = tmp_path / "data"
    crops(data, [f"{i}.png" for i in range(6)])
    args = [sys.executable, "-m", "sgafast.cli", "refine", str(data), "--iters", "40",
            "--track-every", "0", "--no-compile", "--quiet"]
    clean = _run(args + ["-o", str(tmp_path / "clean")])
    assert clean.returncode == 0, clean.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args + ["-o", str(tmp_path / "killed")], env=env)
    deadline = time.monotonic() + 300
    while len(list((tmp_path / "killed").glob("*.json"))) < 2:  # some images finished
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _run(args + ["-o", str(tmp_path / "killed")]).returncode == 0
    assert bins(tmp_path / "killed") == bins(tmp_path / "clean")
    assert len(list((tmp_path / "killed").glob("*.json"))) == 6


def test_an_out_of_memory_batch_is_retried_image_by_image(tmp_path, monkeypatch):
    from sgafast import pipeline

    real = pipeline.refine_batch
    sizes = []

    def small_device(model, canvas, identities, cfg, *options):
        sizes.append(len(identities))
        if len(identities) > 1 or identities == ["q"]:  # q does not fit even alone
            raise torch.OutOfMemoryError("pretend it does not fit")
        return real(model, canvas, identities, cfg, *options)

    monkeypatch.setattr(pipeline, "refine_batch", small_device)
    crops(tmp_path / "data", ["p.png", "q.png", "r.png"])
    assert main(["refine", str(tmp_path / "data"), "-o", str(tmp_path / "o"), "--batch-size",
                 "3", *FAST]) == 1
    assert sizes == [3, 1, 1, 1] and set(bins(tmp_path / "o")) == {"p.bin", "r.bin"}
    failed = json.loads((tmp_path / "o" / "_sgafast" / "failed" / "q.json").read_text())
    assert "out of memory even alone" in failed["reason"]


def test_a_large_image_says_what_it_costs_before_it_starts(tmp_path, capsys, monkeypatch):
    from sgafast import pipeline

    monkeypatch.setattr(pipeline, "LARGE_PIXELS", 96 * 64)  # the crops below count as large
    crops(tmp_path / "data", ["big.png"])
    assert main(["refine", str(tmp_path / "data"), "-o", str(tmp_path / "o"), "--iters", "1",
                 "--track-every", "0", "--no-compile"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[1].startswith("sgafast: big.png: 96x64 (0.0 Mpixel): refining takes about ")
    assert "GB of memory" in lines[1] and lines[2].startswith("sgafast: [1/1] big.png")


@pytest.mark.parametrize("method,decodes", [("none", 1), ("ssl", 2)])
def test_the_base_codec_alone_is_coded_and_decoded_once(tmp_path, monkeypatch, method,
                                                        decodes):
    from sgafast import pipeline

    calls = []
    real = pipeline.bitstream.decode
    monkeypatch.setattr(pipeline.bitstream, "decode", lambda *a: calls.append(1) or real(*a))
    crops(tmp_path / "data", ["p.png"])
    assert main(["refine", str(tmp_path / "data"), "-o", str(tmp_path / "o"), "--method",
                 method, *FAST]) == 0
    assert len(calls) == decodes  # the record's equality for none: test_cli's


@pytest.mark.parametrize("env,expected", [
    ({}, (0, 1, "none")),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
     (3, 8, "torchrun")),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10"},
     (2, 4, "slurm-array")),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "6"}, (5, 6, "slurm")),
])
def test_the_shard_comes_from_the_launchers_environment(env, expected):
    from sgafast.shard import from_environment

    shard = from_environment(env)
    assert (shard.rank, shard.world, shard.launcher) == expected
    items = list(range(20))
    assert shard.take(items) == items[shard.rank::shard.world]
