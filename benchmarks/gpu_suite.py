"""GPU check and benchmark of the fused soft rounding (issue 3), one process, about 3 minutes.

    python benchmarks/gpu_suite.py --out DIR [--budget SECONDS] [--quick]

1. correctness on the GPU against the reference on the same noise (explicit and seeded), with
   the tolerance rule of tests/helpers.py, and the int64 offsets above 2^32 elements;
2. timing, side by side: the eager reference and ``torch.compile`` of the reference, both
   drawing their noise with the Philox twin (inside the compiled graph, as the loop must), and
   the fused op
   (``sga_round(backend="triton")``, noise drawn in-kernel; ``launcher``: its two kernels
   called directly, without autograd); forward and forward+backward; fp32 and bf16; the Kodak
   latent sizes and 64 M elements. Median µs of ``triton.testing.do_bench`` (CUDA events, L2
   flushed), GB/s over the fewest bytes the op must move, that as a fraction of a
   device-to-device copy timed in this run, and kernel launches per call (torch.profiler);
3. the launch configurations and methods of the fused op at 64 M elements.

Writes DIR/<date>_<gpu>.json (long format, one record per measurement) and DIR/<date>_<gpu>.md,
rewritten after every section so that a run cut short keeps what it measured.
"""

import argparse
import datetime
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import torch
import triton
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' helpers
from helpers import GUMBEL, relative_errors, tolerance, within_tolerance  # noqa: E402

from sgafast import sga_round
from sgafast.kernels import launch
from sgafast.kernels import sga_round as kernels
from sgafast.ops import reference
from sgafast.ops.noise import logistic_from_uniform, packed_words, uint_to_uniform
from sgafast.ops.rounding import DEFAULT_A

TAU = 0.5
METHOD = dict(method="ssl", classes=2, a=DEFAULT_A[2], r=0.98, n=1.5)  # SGA+'s best, the default
SIZES = [(batch, channels, 32, 48) for channels in (192, 320) for batch in (1, 8, 24)]
SIZES.append((2048, 32, 32, 32))  # 64 M elements
DEVICE = torch.device("cuda")
TAU_T = torch.tensor([TAU], device=DEVICE)  # the launchers take tau and the counter on the device
COUNTER = torch.tensor([5, 1], device=DEVICE)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Report:
    """The run's records, written as JSON and Markdown after every section."""

    def __init__(self, out: Path):
        props = torch.cuda.get_device_properties(0)
        self.meta = {
            "gpu": torch.cuda.get_device_name(0),
            "sm_count": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tau": TAU,
            "timed_method": METHOD,
        }
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.meta["gpu"]).strip("-").lower()
        stem = f"{self.meta['date'][:10]}_{slug}"
        out.mkdir(parents=True, exist_ok=True)
        self.json_path, self.md_path = out / f"{stem}.json", out / f"{stem}.md"
        self.sections = {}

    def add(self, section: str, record: dict):
        self.sections.setdefault(section, []).append(record)

    def write(self):
        self.json_path.write_text(json.dumps({"meta": self.meta, **self.sections}, indent=1))
        self.md_path.write_text(markdown(self.meta, self.sections))


def log(message: str):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------------------
# 1. Correctness
# ----------------------------------------------------------------------------------------------


def evaluate(v, center, grad_out, **kwargs):
    v = v.detach().requires_grad_()
    center = center.detach().requires_grad_()
    out = sga_round(v, center=center, **kwargs)
    out.backward(grad_out)
    return out.detach(), v.grad, center.grad


def check_against_reference(report: Report):
    """Every method, fp32/fp16/bf16, explicit and seeded noise: output, grad v, grad center."""
    gen = torch.Generator().manual_seed(0)
    shape = (3, 37, 41)  # odd sizes, per-item seeds of 3 items
    v = (torch.randn(shape, generator=gen) * 3).to(DEVICE)
    center = (torch.randn(shape, generator=gen) * 2).to(DEVICE)
    grad_out = torch.randn(shape, generator=gen).to(DEVICE)
    ok = True
    for method, classes in GUMBEL:
        noise = -torch.log(-torch.log(torch.rand((*shape, classes), generator=gen)))
        noise = noise.to(DEVICE)
        for source_name, source in [("noise", dict(noise=noise)),
                                    ("seed", dict(seed=torch.tensor([1, 2**40, 2**63 - 1],
                                                                    device=DEVICE)))]:
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                inputs = [t.to(dtype) for t in (v, center, grad_out)]  # float64: same values
                runs = [evaluate(*(t.to(dt) for t in inputs), tau=TAU, method=method,
                                 classes=classes, backend=backend, **source)
                        for dt, backend in [(dtype, "triton"), (dtype, "torch"),
                                            (torch.float64, "torch")]]
                for what, k, t, r in zip(["output", "grad_v", "grad_center"], *runs):
                    worst, worst_torch = relative_errors(k, t, r)
                    passed = within_tolerance(worst, worst_torch, **tolerance(dtype))
                    ok &= passed
                    report.add("correctness", dict(
                        method=method, classes=classes, noise=source_name,
                        dtype=str(dtype)[6:], tensor=what, worst_rel_error=worst,
                        torch_worst_rel_error=worst_torch, passed=passed))
    log(f"correctness against the reference: {'PASS' if ok else 'FAIL'}")
    return ok


def check_large_offsets(report: Report, shift: int = 2**32, k: int = 2**20):
    """Element shift + i gets its own noise, equal to the torch stream's beyond 2^32 elements
    (int64 offsets; 2 x 17 GB of fp32)."""
    try:
        v = torch.full((shift + k,), 0.3, device=DEVICE)
        out = sga_round(v, 1.0, method="linear", seed=12345, backend="triton")
    except torch.cuda.OutOfMemoryError:
        report.add("offsets", dict(skipped=f"out of memory for 2 x {(shift + k) / 2**28:.0f} GiB"))
        log("large offsets: skipped, out of memory")
        return True
    index = torch.arange(shift, shift + k, device=DEVICE)
    gap = logistic_from_uniform(uint_to_uniform(packed_words(index, torch.tensor(
        12345, device=DEVICE))))
    noise = torch.stack([torch.zeros_like(gap), gap], dim=-1)  # the two-class stream: (0, L)
    tail = reference.soft_round(v[shift:].double(), 1.0, noise.double(), method="linear",
                                classes=2, a=1.0, r=1.0, n=1.0)
    tail_error = (out[shift:].double() - tail).abs().max().item()
    distinct = (out[:k] != out[shift:]).float().mean().item()
    del v, out
    torch.cuda.empty_cache()
    ok = tail_error < 1e-5 and distinct > 0.99
    report.add("offsets", dict(numel=shift + k, shift=shift, tail_max_abs_error=tail_error,
                               fraction_differing_from_index_minus_shift=distinct, passed=ok))
    log(f"offsets {shift}+: tail error {tail_error:.2e}, distinct {distinct:.4f}: "
        f"{'PASS' if ok else 'FAIL'}")
    return ok


# ----------------------------------------------------------------------------------------------
# 2. Timing
# ----------------------------------------------------------------------------------------------


def bench(fn) -> tuple[float, float, float]:
    """Median, 20th and 80th percentile in µs (CUDA events, L2 flushed before each run)."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    estimate_ms = (time.perf_counter() - start) * 1e3
    rep = min(max(100.0, 15 * estimate_ms), 1500.0)  # >= ~15 runs of the slow eager calls
    median, p20, p80 = triton.testing.do_bench(fn, warmup=max(25.0, 3 * estimate_ms), rep=rep,
                                               quantiles=[0.5, 0.2, 0.8])
    return median * 1e3, p20 * 1e3, p80 * 1e3


def launches(fn) -> float:
    """Kernel launches per call (memcpy and memset not counted), over three profiled calls."""
    fn()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    kernels_run = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.name.startswith(("Memcpy", "Memset"))]
    return len(kernels_run) / 3


def copy_bandwidth() -> float:
    """GB/s of a device-to-device copy of 1 GiB, counting bytes read and written."""
    src = torch.empty(2**28, device=DEVICE)
    dst = torch.empty_like(src)
    median_us, _, _ = bench(lambda: dst.copy_(src))
    return 2 * src.nbytes / (median_us * 1e-6) / 1e9


def providers(v: torch.Tensor, grad_out: torch.Tensor, compiled):
    """Name -> (forward, forward+backward) callables of each implementation."""
    soft = dict(method=METHOD["method"], classes=2, a=METHOD["a"], r=METHOD["r"], n=METHOD["n"])
    seeds = torch.tensor([7], device=DEVICE)
    leaf = v.detach().requires_grad_()
    block, warps = launch.launch_config(v.numel(), v.device)
    launch_args = dict(**soft, seeds=seeds, counter=COUNTER, block=block, num_warps=warps)

    def with_grad(f):
        return lambda: torch.autograd.grad(f(leaf), leaf, grad_out)

    def eager(x):  # draws its noise with the Philox twin, as the eager loop does
        return sga_round(x, TAU, seed=seeds, counter=COUNTER, backend="torch", **METHOD)

    def traced(x):  # 1-D: one compilation for all sizes (batch 1 would be specialised)
        return compiled(x.reshape(-1), seeds).reshape(x.shape)

    def fused(x):
        return sga_round(x, TAU, seed=seeds, backend="triton", **METHOD)

    def launcher_both():
        kernels.sga_round_forward(v, TAU_T, **launch_args)
        return kernels.sga_round_backward(grad_out, v, TAU_T, **launch_args)

    return {
        "eager": (lambda: eager(v), with_grad(eager)),
        "compiled": (lambda: traced(v), with_grad(traced)),
        "fused": (lambda: fused(v), with_grad(fused)),
        "launcher": (lambda: kernels.sga_round_forward(v, TAU_T, **launch_args), launcher_both),
    }


def minimal_bytes(v: torch.Tensor, mode: str) -> int:
    """forward: read v, write out; backward: read v and grad_out, write grad_v (no center)."""
    return v.numel() * v.element_size() * (2 if mode == "forward" else 5)


def time_providers(report: Report, copy_gbps: float, deadline: float, quick: bool):
    def reference_soft_round(x, seeds):
        # the noise is drawn inside the compiled graph (the Philox twin), as the loop must
        return sga_round(x, TAU, seed=seeds, counter=COUNTER, backend="torch", **METHOD)

    # dynamic shapes: one compilation per dtype and mode rather than one per size
    compiled = torch.compile(reference_soft_round, dynamic=True)
    sizes = SIZES[::3] if quick else SIZES
    for dtype_name, dtype in DTYPES.items():
        for shape in sizes:
            if time.monotonic() > deadline:
                log("time budget spent: stopping the timings")
                return
            gen = torch.Generator().manual_seed(1)
            v = (torch.randn(shape, generator=gen) * 3).to(DEVICE, dtype)
            grad_out = torch.randn(shape, generator=gen).to(DEVICE, dtype)
            for name, pair in providers(v, grad_out, compiled).items():
                for mode, fn in zip(("forward", "forward_backward"), pair):
                    median, p20, p80 = bench(fn)
                    gbps = minimal_bytes(v, mode) / (median * 1e-6) / 1e9
                    report.add("timings", dict(
                        provider=name, mode=mode, dtype=dtype_name, shape=list(shape),
                        numel=v.numel(), us_median=median, us_p20=p20, us_p80=p80,
                        gbps_minimal_bytes=gbps, fraction_of_copy=gbps / copy_gbps,
                        launches_per_call=launches(fn)))
            log(f"timed {dtype_name} {shape}")
            report.write()
            del v, grad_out
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# 3. Launch configurations and methods of the fused kernels at 64 M elements
# ----------------------------------------------------------------------------------------------


def sweep_fused(report: Report, copy_gbps: float, deadline: float):
    v = torch.randn(SIZES[-1], device=DEVICE) * 3
    grad_out = torch.randn_like(v)
    seeds = torch.tensor([7], device=DEVICE)
    configs = [(256, 2), (512, 4), (1024, 4), (1024, 8), (2048, 8), (4096, 8)]
    runs = [("config", METHOD["method"], 2, block, warps) for block, warps in configs]
    default_block, default_warps = launch.launch_config(v.numel(), v.device)
    runs += [("method", m, c, default_block, default_warps) for m, c in GUMBEL]
    for sweep, method, classes, block, warps in runs:
        if time.monotonic() > deadline:
            log("time budget spent: stopping the sweeps")
            return
        params = dict(method=method, classes=classes, a=DEFAULT_A[classes], r=0.98, n=1.5,
                      seeds=seeds, counter=COUNTER, block=block, num_warps=warps)
        for mode, fn in [("forward", lambda: kernels.sga_round_forward(v, TAU_T, **params)),
                         ("backward", lambda: kernels.sga_round_backward(grad_out, v, TAU_T,
                                                                         **params))]:
            median, _, _ = bench(fn)
            gbps = v.nbytes * (2 if mode == "forward" else 3) / (median * 1e-6) / 1e9
            report.add("sweeps", dict(sweep=sweep, method=method, classes=classes, block=block,
                                      num_warps=warps, mode=mode, us_median=median,
                                      gbps_minimal_bytes=gbps,
                                      fraction_of_copy=gbps / copy_gbps))
        log(f"swept {sweep} {method}/{classes} BLOCK {block} warps {warps}")
    report.write()


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def markdown(meta: dict, sections: dict) -> str:
    lines = [f"# Fused soft rounding on {meta['gpu']}", "",
             f"{meta['date']}; torch {meta['torch']}, triton {meta['triton']}, "
             f"CUDA {meta['cuda']}; {meta['sm_count']} SMs, {meta['memory_gib']} GiB. "
             f"Timed: {meta['timed_method']['method']} two-class at tau {meta['tau']}; "
             "the reference is given its noise (not timed), the fused op draws it in-kernel.",
             ""]
    if "copy" in sections:
        lines += [f"Device-to-device copy: {sections['copy'][0]['gbps']:.0f} GB/s "
                  "(bytes read + written).", ""]
    if "correctness" in sections:
        rows = sections["correctness"]
        failed = [r for r in rows if not r["passed"]]
        lines += [f"Correctness against the reference: {len(rows) - len(failed)} of "
                  f"{len(rows)} comparisons pass.", ""]
        for r in failed:
            lines.append(f"- FAIL {r['method']}/{r['classes']} {r['dtype']} {r['noise']} "
                         f"{r['tensor']}: {r['worst_rel_error']:.3g} vs torch "
                         f"{r['torch_worst_rel_error']:.3g}")
        lines.append("")
    for r in sections.get("offsets", []):
        lines += [f"Large offsets: {json.dumps(r)}", ""]
    timings = sections.get("timings", [])
    for mode in ("forward", "forward_backward"):
        rows = {(r["dtype"], tuple(r["shape"]), r["provider"]): r for r in timings
                if r["mode"] == mode}
        keys = sorted({(d, s) for d, s, _ in rows}, key=lambda k: (k[0], math.prod(k[1])))
        if not keys:
            continue
        lines += [f"## {mode.replace('_', ' + ')}", "",
                  "| dtype | shape | eager µs | compiled µs | fused µs | launcher µs "
                  "| fused GB/s | fused % copy | × eager | × compiled | launches e/c/f |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for dtype, shape in keys:
            get = {p: rows.get((dtype, shape, p)) for p in ("eager", "compiled", "fused",
                                                             "launcher")}
            if not all(get.values()):
                continue
            e, c, f, k = (get[p]["us_median"] for p in ("eager", "compiled", "fused",
                                                         "launcher"))
            lines.append(
                f"| {dtype} | {'×'.join(map(str, shape))} | {e:.1f} | {c:.1f} | {f:.1f} | "
                f"{k:.1f} | {get['fused']['gbps_minimal_bytes']:.0f} | "
                f"{100 * get['fused']['fraction_of_copy']:.0f} % | {e / f:.1f} | {c / f:.2f} | "
                + "/".join(f"{get[p]['launches_per_call']:g}"
                           for p in ("eager", "compiled", "fused")) + " |")
        lines.append("")
    sweeps = sections.get("sweeps", [])
    if sweeps:
        lines += ["## Fused kernels at 64 M fp32 elements (launchers)", "",
                  "| sweep | method | BLOCK | warps | forward µs | % copy | backward µs "
                  "| % copy |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        pairs = {}
        for r in sweeps:
            key = (r["sweep"], r["method"], r["classes"], r["block"], r["num_warps"])
            pairs.setdefault(key, {})[r["mode"]] = r
        for (sweep, method, classes, block, warps), modes in pairs.items():
            if len(modes) == 2:
                fw, bw = modes["forward"], modes["backward"]
                lines.append(f"| {sweep} | {method}/{classes} | {block} | {warps} | "
                             f"{fw['us_median']:.0f} | {100 * fw['fraction_of_copy']:.0f} % | "
                             f"{bw['us_median']:.0f} | {100 * bw['fraction_of_copy']:.0f} % |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and .md")
    parser.add_argument("--budget", type=float, default=270.0,
                        help="seconds after which the remaining timings are skipped")
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_suite.py needs a CUDA device")
    deadline = time.monotonic() + args.budget
    report = Report(args.out)
    log(f"{report.meta['gpu']}, torch {torch.__version__}, triton {triton.__version__}")
    ok = check_against_reference(report)
    ok &= check_large_offsets(report)
    report.write()
    copy_gbps = copy_bandwidth()
    report.add("copy", dict(gbps=copy_gbps, bytes=2 * 2**30))
    log(f"device-to-device copy: {copy_gbps:.0f} GB/s")
    time_providers(report, copy_gbps, deadline, args.quick)
    sweep_fused(report, copy_gbps, deadline)
    report.write()
    log(f"wrote {report.json_path} and {report.md_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
