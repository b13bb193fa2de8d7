"""Static SASS instruction counts, registers and spills of the fused rounding kernels (no GPU).

Usage, after changing kernels/sga_round.py:

    python benchmarks/sass_counts.py --out benchmarks/results/sass/after.md

and for the kernels of another commit, through a git worktree:

    git worktree add /tmp/sass-before bc28295
    python benchmarks/sass_counts.py --root /tmp/sass-before --out benchmarks/results/sass/before.md
    git worktree remove /tmp/sass-before

Writes a Markdown table to --out and the same numbers, with each kernel's opcode histogram, to
the .json beside it. One row per method x classes x direction, in the variant the refinement
loop launches: fp32, seeded noise (HAS_NOISE=0), a center (HAS_CENTER=1) whose gradient is
taken (CENTER_GRAD=1), BLOCK=1024 and 8 warps, compiled for sm_90 by ``kernels/aot.py``.

Counting. Each thread handles BLOCK / (32 * num_warps) = 4 elements with no loop (one block
per program), so instructions per element = the static count / 4. The count is of the main
path: up to the first out-of-line subroutine (the 64-bit division pid // blocks_per_item falls
back to, only for quotients of 2^32 and more), without the trailing self-branch and NOP
padding; the total column counts everything in the cubin. The main path is straight-line code
except for cosine: tl.cos and tl.sin bring an inline large-argument reduction (the 32-byte
stack frame, with local loads and stores) that is branched around for the kernels' arguments,
all in [-pi/2, pi/2], so cosine's count is static, above what a thread executes.

A previous measurement of these kernels gave about 304 (forward) and 356 (backward)
instructions per element for two-class SSL. This method gives 305.00 and 357.00 at bc28295:
the main path divided by 4, not the total (328 and 380). The last instruction per element is
the width of per_item: the signature rule types it i64, while a launch with fewer than 2^31
elements per item passes an i32, whose main paths are 1213 and 1421 instructions (303.25 and
355.25 per element), likely the previous figures rounded up.
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import triton  # its version only: the subprocess compiles

REPO = Path(__file__).resolve().parents[1]
AOT = REPO / "kernels" / "aot.py"
LOOP_FLAGS = "dtype=fp32,HAS_CENTER=1,HAS_NOISE=0"
COLUMNS = ("method", "classes", "direction", "SASS total", "SASS main", "instr/element",
           "MUFU/element", "registers", "stack bytes", "spill stores", "spill loads")


def compile_loop_variants(root: Path, arch: int, jobs: int) -> list[dict]:
    """aot.py's records of the loop's variants, compiled with SASS counts in a subprocess.

    A subprocess, so that ``--root`` imports another checkout's kernels, and without
    TRITON_INTERPRET, under which @triton.jit functions cannot be compiled.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        cmd = [sys.executable, str(AOT), "--root", str(root), "--arch", str(arch), "--sass",
               "--jobs", str(jobs), "--json", str(out),
               "--select", f"{LOOP_FLAGS},direction=forward",
               "--select", f"{LOOP_FLAGS},direction=backward,CENTER_GRAD=1"]
        subprocess.run(cmd, env=env, check=True)
        return json.loads(out.read_text())["records"]


def row(record: dict) -> dict:
    """The table's numbers for one compiled variant."""
    per_thread = record["constexprs"]["BLOCK"] // (32 * record["num_warps"])
    mufu = sum(n for op, n in record["opcodes"].items() if op.startswith("MUFU"))
    return {"method": record["tags"]["method"], "classes": record["constexprs"]["CLASSES"],
            "direction": record["tags"]["direction"], "sass_total": record["sass_total"],
            "sass_main": record["sass_main"], "per_element": record["sass_main"] / per_thread,
            "mufu_per_element": mufu / per_thread, "registers": record["registers"],
            "stack": record["stack"], "spill_stores": record["spill_stores"],
            "spill_loads": record["spill_loads"], "opcodes": record["opcodes"]}


def describe_checkout(root: Path) -> str:
    """The checkout's commit, and whether its kernels differ from it."""
    git = ["git", "-C", str(root)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "kernels"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return f"{commit} + uncommitted changes to kernels/" if dirty else commit


def markdown(rows: list[dict], header: dict) -> str:
    """The Markdown report: provenance, then one table row per kernel."""
    lines = [f"# SASS instruction counts, sm_{header['arch']}", "",
             f"- Triton {header['triton']}, {header['date']}",
             f"- Command: `{header['command']}`",
             f"- Kernels: commit {header['commit']}",
             "- Variant: fp32, seeded noise, with a center and its gradient, BLOCK=1024, "
             "8 warps (4 elements per thread)",
             "- SASS main: the main path without out-of-line subroutines and padding; "
             "instr/element = SASS main / 4",
             "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (r["method"], r["classes"], r["direction"], r["sass_total"], r["sass_main"],
                 f"{r['per_element']:.2f}", f"{r['mufu_per_element']:.2f}", r["registers"],
                 r["stack"], r["spill_stores"], r["spill_loads"])
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Compile, count, and write the Markdown table and its JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="Markdown file; JSON beside it")
    p.add_argument("--root", type=Path, default=REPO, help="checkout whose kernels to count")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    records = compile_loop_variants(args.root, args.arch, args.jobs)
    failed = [r["name"] for r in records if not r["ok"]]
    if failed:
        raise SystemExit(f"did not compile: {failed}")
    header = {"arch": args.arch, "triton": triton.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": shlex.join(["python", os.path.relpath(__file__), *sys.argv[1:]]),
              "commit": describe_checkout(args.root)}
    rows = [row(r) for r in records]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, header))
    args.out.with_suffix(".json").write_text(json.dumps({**header, "rows": rows}, indent=1))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
