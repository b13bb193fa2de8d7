"""Ahead-of-time compilation of every fused-kernel variant for a GPU target, without a GPU."""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import importlib
import importlib.abc
import importlib.util
import io
import itertools
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget

# The signature rule, by argument name: `*_ptr` arguments are pointers, to the variant's data
# dtype unless listed here; scalars are fp32 unless listed as integers.
POINTER_TYPES = {"seeds_ptr": "*i64", "counter_ptr": "*i64", "tau_ptr": "*fp32",
                 "noise_ptr": "*fp32", "partial_ptr": "*fp32", "grad_bits_ptr": "*fp32"}
INTEGER_ARGS = {"per_item", "blocks_per_item"}
TORCH_TO_TRITON = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
DEFAULT_ARCHS = (90, 80)
_CHECKOUT_PACKAGES = {"sgafast": "sgafast", "sgafast.kernels": "kernels"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compiled form of a kernel: its specialisation and the GPU it is compiled for."""

    module: str  # dotted module name, or the path of a .py file
    kernel: str  # the @triton.jit function's name in it
    arch: int  # compute capability, e.g. 90
    dtype: str  # element type of the data pointers: fp32, fp16 or bf16
    num_warps: int
    constexprs: dict = dataclasses.field(default_factory=dict)
    tags: dict = dataclasses.field(default_factory=dict)  # labels only, e.g. method=ssl

    def fields(self) -> dict[str, str]:
        """Every attribute a --select can match, as strings."""
        return {"kernel": self.kernel, "arch": str(self.arch), "dtype": self.dtype,
                "num_warps": str(self.num_warps), **{k: str(v) for k, v in self.tags.items()},
                **{k: str(v) for k, v in self.constexprs.items()}}

    @property
    def name(self) -> str:
        """A readable unique name: target, kernel, dtype, constexprs."""
        consts = " ".join(f"{k}={v}" for k, v in self.constexprs.items())
        return f"sm_{self.arch} {self.kernel} {self.dtype} {consts}"


# ----------------------------------------------------------------------------------------------
# The enumeration: one function per kernel module, registered in FAMILIES
# ----------------------------------------------------------------------------------------------


def sga_round_variants(archs) -> list[Variant]:
    """Every variant of kernels/sga_round.py the launchers can request, at the GPU launch config.

    CENTER_GRAD needs a center (the launcher passes no center gradient without one).
    """
    import torch

    from sgafast.kernels import launch, sga_round, soft_round
    from sgafast.ops import rounding

    # the GPU configuration does not depend on the size; no GPU is touched
    block, num_warps = launch.launch_config(1 << 20, torch.device("cuda"))
    pairs = ([(m, 2) for m in rounding.TWO_CLASS_METHODS]
             + [(m, 3) for m in rounding.THREE_CLASS_METHODS])
    dtypes = [TORCH_TO_TRITON[str(d).removeprefix("torch.")] for d in launch.KERNEL_DTYPES]
    variants = []
    for arch, dtype, (method, classes), has_center, has_noise in itertools.product(
            archs, dtypes, pairs, (0, 1), (0, 1)):
        common = {"METHOD": soft_round.METHOD_IDS[method], "CLASSES": classes,
                  "HAS_CENTER": has_center, "HAS_NOISE": has_noise, "BLOCK": block}
        variants.append(Variant(sga_round.__name__, "_sga_round_fwd_kernel", arch, dtype,
                                num_warps, common, {"method": method, "direction": "forward"}))
        for center_grad in (0, 1) if has_center else (0,):
            variants.append(Variant(sga_round.__name__, "_sga_round_bwd_kernel", arch, dtype,
                                    num_warps, {**common, "CENTER_GRAD": center_grad},
                                    {"method": method, "direction": "backward"}))
    return variants


def gaussian_bits_variants(archs) -> list[Variant]:
    """kernels/gaussian_bits.py: with and without means (and their gradient), every dtype."""
    import torch

    from sgafast.kernels import gaussian_bits, launch

    block, num_warps = launch.launch_config(1 << 20, torch.device("cuda"))
    dtypes = [TORCH_TO_TRITON[str(d).removeprefix("torch.")] for d in launch.KERNEL_DTYPES]
    variants = []
    for arch, dtype, has_means in itertools.product(archs, dtypes, (0, 1)):
        common = {"HAS_MEANS": has_means, "BLOCK": block}
        tags = {"method": "rate"}
        variants.append(Variant(gaussian_bits.__name__, "_gaussian_bits_fwd_kernel", arch,
                                dtype, num_warps, common, {**tags, "direction": "forward"}))
        for means_grad in (0, 1) if has_means else (0,):
            variants.append(Variant(gaussian_bits.__name__, "_gaussian_bits_bwd_kernel", arch,
                                    dtype, num_warps, {**common, "MEANS_GRAD": means_grad},
                                    {**tags, "direction": "backward"}))
    return variants


def sga_round_bits_variants(archs) -> list[Variant]:
    """kernels/sga_round_bits.py: every Gumbel rounding, with means and their gradient (the
    loop's use), every dtype."""
    import torch

    from sgafast.kernels import launch, sga_round_bits, soft_round
    from sgafast.ops import rounding

    block, num_warps = launch.launch_config(1 << 20, torch.device("cuda"))
    pairs = ([(m, 2) for m in rounding.TWO_CLASS_METHODS]
             + [(m, 3) for m in rounding.THREE_CLASS_METHODS])
    dtypes = [TORCH_TO_TRITON[str(d).removeprefix("torch.")] for d in launch.KERNEL_DTYPES]
    variants = []
    for arch, dtype, (method, classes) in itertools.product(archs, dtypes, pairs):
        common = {"METHOD": soft_round.METHOD_IDS[method], "CLASSES": classes, "HAS_MEANS": 1,
                  "BLOCK": block}
        tags = {"method": method}
        variants.append(Variant(sga_round_bits.__name__, "_sga_round_bits_fwd_kernel", arch, dtype,
                                num_warps, common, {**tags, "direction": "forward"}))
        variants.append(Variant(sga_round_bits.__name__, "_sga_round_bits_bwd_kernel", arch, dtype,
                                num_warps, {**common, "MEANS_GRAD": 1},
                                {**tags, "direction": "backward"}))
    return variants


# A new kernel module: write its variants function like the ones above, add it here, and
# extend POINTER_TYPES / INTEGER_ARGS if its arguments need other types.
FAMILIES = {"sga_round": sga_round_variants, "gaussian_bits": gaussian_bits_variants,
            "sga_round_bits": sga_round_bits_variants}


def enumerate_variants(archs=DEFAULT_ARCHS) -> list[Variant]:
    """Every registered kernel family's variants, for each compute capability in ``archs``."""
    return [v for family in FAMILIES.values() for v in family(archs)]


def select(variants: list[Variant], selectors: list[str]) -> list[Variant]:
    """The variants matching any selector, each a comma-separated AND of KEY=VALUE pairs."""
    if not selectors:
        return variants
    wanted = [dict(pair.split("=", 1) for pair in s.split(",")) for s in selectors]
    return [v for v in variants
            if any(all(v.fields().get(k) == val for k, val in w.items()) for w in wanted)]


def parse_kernel_spec(spec: str, archs) -> list[Variant]:
    """Variants of one kernel given as MODULE:NAME[:KEY=VALUE,...], for each of ``archs``.

    MODULE is a dotted name or a .py path; keys dtype (default fp32) and num_warps (default 4,
    Triton's) are launch options, the others constexprs with integer values.
    """
    module, kernel, *rest = spec.split(":")
    options = dict(pair.split("=", 1) for pair in rest[0].split(",")) if rest else {}
    dtype = options.pop("dtype", "fp32")
    num_warps = int(options.pop("num_warps", 4))
    constexprs = {k: int(v) for k, v in options.items()}
    return [Variant(module, kernel, arch, dtype, num_warps, constexprs) for arch in archs]


# ----------------------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------------------


def load_kernel(module: str, kernel: str) -> triton.runtime.JITFunction:
    """The @triton.jit function ``kernel`` of a dotted module or a .py file."""
    if module.endswith(".py"):
        name = "_aot_" + re.sub(r"\W", "_", str(Path(module).resolve()))
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, module)
            sys.modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(sys.modules[name])
        return getattr(sys.modules[name], kernel)
    return getattr(importlib.import_module(module), kernel)


def signature(fn: triton.runtime.JITFunction, dtype: str) -> tuple[dict, dict]:
    """(signature, attrs) of a kernel by the naming rule, specialised as the launcher would.

    The launcher marks a tensor 16-byte aligned (torch allocations are) and an integer a
    multiple of 16 (per_item of real latents is) unless told not to specialise it: that
    divisibility is what vectorises loads and stores, so the compiled code matches a launch.
    Integers are i64: the widest code (a launch passes i32 below 2^31 elements per item).
    """
    types, attrs = {}, {}
    for i, param in enumerate(fn.params):
        name = param.name
        if param.is_constexpr:
            types[name] = "constexpr"
            continue
        if name.endswith("_ptr"):
            types[name] = POINTER_TYPES.get(name, "*" + dtype)
        else:
            types[name] = "i64" if name in INTEGER_ARGS else "fp32"
        if name.endswith("_ptr") or (name in INTEGER_ARGS and not param.do_not_specialize):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return types, attrs


def ptxas_usage(log: str) -> dict:
    """Registers, stack frame and spill bytes from ptxas -v's report."""
    regs = re.search(r"Used (\d+) registers", log)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                      r"loads", log)
    return {"registers": int(regs.group(1)) if regs else None,
            **dict(zip(("stack", "spill_stores", "spill_loads"),
                       map(int, frame.groups()) if frame else (None,) * 3))}


def sass_counts(cubin: bytes) -> dict:
    """Static SASS instruction counts of a cubin: all, and the main path with its opcodes.

    The main path stops at the first out-of-line subroutine (a CALL target, e.g. the 64-bit
    division that only runs for quotients above 2^32) and leaves out the trailing self-branch
    and NOP padding, which never execute.
    """
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        listing = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "-sass", f.name],
                                 capture_output=True, text=True, check=True).stdout
    code = [(int(a, 16), text.strip())
            for a, text in re.findall(r"^\s*/\*([0-9a-f]{4,})\*/\s+([^;]*);", listing, re.M)]
    calls = [int(t, 16) for _, text in code for t in re.findall(r"CALL\.\S+ (0x[0-9a-f]+)", text)]
    main = [(a, text) for a, text in code if a < min(calls, default=float("inf"))]
    while main and (main[-1][1] == "NOP" or main[-1][1] == f"BRA {hex(main[-1][0])}"):
        main.pop()
    opcodes = collections.Counter(text.split()[1] if text.startswith("@") else text.split()[0]
                                  for _, text in main)
    return {"sass_total": len(code), "sass_main": len(main), "opcodes": dict(opcodes)}


def compile_variant(variant: Variant, with_sass: bool = False) -> dict:
    """Compile one variant; a record with ok/error, ptxas usage and optionally SASS counts.

    Always compiles (no cache hit), so that every call runs ptxas and reports its usage.
    """
    triton.knobs.compilation.always_compile = True
    triton.knobs.nvidia.dump_ptxas_log = True
    record = {"name": variant.name, **dataclasses.asdict(variant)}
    start = time.perf_counter()
    log = io.StringIO()  # Triton prints the ptxas report, and the PTX when ptxas fails
    try:
        fn = load_kernel(variant.module, variant.kernel)
        types, attrs = signature(fn, variant.dtype)
        src = triton.compiler.ASTSource(fn=fn, signature=types, constexprs=variant.constexprs,
                                        attrs=attrs)
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", variant.arch, 32),
                                      options={"num_warps": variant.num_warps})
    except Exception as exc:  # any stage (front end, LLVM, ptxas) is a failure to report
        # the message's end: Triton puts the error there, after the source or the PTX
        return {**record, "ok": False, "error": f"{type(exc).__name__}: {exc}"[-3000:],
                "seconds": time.perf_counter() - start}
    extra = sass_counts(compiled.asm["cubin"]) if with_sass else {}
    return {**record, "ok": True, "error": None, **ptxas_usage(log.getvalue()), **extra,
            "seconds": time.perf_counter() - start}


def compile_all(variants: list[Variant], jobs: int = os.cpu_count() or 1,
                with_sass: bool = False, progress=None) -> list[dict]:
    """Compile variants over ``jobs`` forked processes; records in the variants' order."""
    flags = [with_sass] * len(variants)
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            # fork: workers inherit the loaded kernel modules (and a --root import redirect)
            pool = stack.enter_context(
                ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")))
            results = pool.map(compile_variant, variants, flags)
        else:
            results = map(compile_variant, variants, flags)
        records = []
        for record in results:
            records.append(record)
            if progress:
                progress(record)
    return records


# ----------------------------------------------------------------------------------------------
# Compiling another checkout's kernels (e.g. a git worktree of an older commit)
# ----------------------------------------------------------------------------------------------


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Imports sgafast and sgafast.kernels from another checkout, before the installed ones."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        """The package's spec under the checkout's root; submodules follow its __path__."""
        if fullname not in _CHECKOUT_PACKAGES:
            return None
        folder = self.root / _CHECKOUT_PACKAGES[fullname]
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def use_checkout(root: Path) -> None:
    """Make later imports of sgafast and its kernels come from ``root``."""
    if "sgafast" in sys.modules:
        raise RuntimeError("--root: sgafast is already imported; run this file as a script, "
                           "python kernels/aot.py --root DIR")
    sys.meta_path.insert(0, _CheckoutFinder(root.resolve()))


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog="examples: python -m sgafast.kernels.aot --arch 90 --select dtype=fp32 | "
               "python kernels/aot.py --root /tmp/old --select method=ssl,direction=forward "
               "--sass --json out.json")
    p.add_argument("--arch", type=int, nargs="+", default=list(DEFAULT_ARCHS),
                   help="compute capabilities (default: 90 80)")
    p.add_argument("--select", action="append", default=[], metavar="KEY=VALUE[,...]",
                   help="keep variants matching all pairs; repeat to OR (keys: kernel, arch, "
                        "dtype, num_warps, method, direction, constexpr names)")
    p.add_argument("--kernel", action="append", default=[], metavar="MODULE:NAME[:K=V,...]",
                   help="compile this kernel instead of the enumeration (a .py path or module)")
    p.add_argument("--root", type=Path, help="compile the kernels of this checkout")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sass", action="store_true", help="also count SASS instructions")
    p.add_argument("--list", action="store_true", help="print the selected variants and stop")
    p.add_argument("--json", type=Path, help="write the records here")
    return p


def _print_record(record: dict) -> None:
    """One line per compiled variant, as it finishes."""
    status = f"ok {record['registers']} regs" if record["ok"] else "FAILED"
    print(f"{status:>12}  {record['seconds']:5.1f} s  {record['name']}", flush=True)


def main(argv=None) -> int:
    """Compile the selected variants; exit status 1 if any failed."""
    args = _parser().parse_args(argv)
    if args.root:
        use_checkout(args.root)
    if args.kernel:
        variants = [v for spec in args.kernel for v in parse_kernel_spec(spec, args.arch)]
    else:
        variants = select(enumerate_variants(args.arch), args.select)
    if args.list:
        print("\n".join(v.name for v in variants))
        return 0
    start = time.perf_counter()
    records = compile_all(variants, args.jobs, args.sass, _print_record)
    failed = [r for r in records if not r["ok"]]
    for r in failed:
        print(f"\nFAILED {r['name']}\n{r['error']}", file=sys.stderr)
    print(f"{len(records) - len(failed)} of {len(records)} variants compiled in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"triton": triton.__version__, "records": records},
                                        indent=1))
    return 1 if failed or not records else 0


if __name__ == "__main__":
    sys.exit(main())
