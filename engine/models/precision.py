"""`--precision auto`: the precision that is fastest on THIS machine, measured rather than assumed.

bf16 frozen weights halve memory and run on bf16 units where a CPU has them (AVX512-BF16, AMX): the lab's
trainer is ~1.4x faster there than in fp32. On CPUs without them (AVX2 only: most laptops, many cloud VMs)
torch emulates bf16 matmuls at ~1% of fp32 speed and a run takes hours instead of minutes. The CPU flags
alone do not say which path torch and oneDNN will take (ONEDNN_MAX_CPU_ISA, the build, a VM hiding
flags), so `auto` times both: a few LoRA-layer-shaped matmuls, forward and backward, in each precision
(a fraction of a second, most of it the emulated bf16), and keeps bf16 only if it is clearly faster.
The result is cached per machine (CPU model and flags, torch version, the ISA environment variables,
threads) in the lab's cache folder, so later runs and the dashboard read it for free.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass

import torch

from engine.settings import cache_dir

BF16_MUST_BE_FASTER = 0.8   # bf16 only when it takes < 80% of fp32's time: noise never flips the choice
SHAPE = (128, 576, 1536)    # rows x d_in x d_out: a packed micro-batch through a SmolLM2-sized MLP layer
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_DEFAULT_FPMATH_MODE")


@dataclass
class Calibration:
    """What `auto` measured on this CPU; stored beside the run's config and shown on Launch."""
    key: str
    cpu: str
    isa: str                 # torch.backends.cpu.get_cpu_capability(): the vector ISA torch's kernels use
    threads: int
    fp32_gflops: float
    bf16_gflops: float
    choice: str              # "fp32" | "bf16"
    reason: str
    seconds: float           # what the calibration itself cost


@dataclass
class PrecisionChoice:
    precision: str           # "fp32" | "bf16"
    reason: str
    calibration: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_name_and_flags() -> tuple[str, str]:
    name, flags = "unknown CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "unknown CPU":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = line.split(":", 1)[1].strip()
    except OSError:
        import platform
        name = platform.processor() or platform.machine()
    return name, flags


def machine_key() -> str:
    """Everything that can change which matmul kernels run: a new value means a new calibration."""
    name, flags = _cpu_name_and_flags()
    parts = [name, flags, torch.__version__, torch.backends.cpu.get_cpu_capability(), str(torch.get_num_threads())]
    parts += [f"{k}={os.environ.get(k, '')}" for k in ISA_ENV]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _gflops(dtype: torch.dtype, budget_s: float) -> float:
    """GFLOP/s of y = x W^T and its input gradient (what a frozen layer under LoRA costs), in `dtype`."""
    n, d_in, d_out = SHAPE
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=g).to(dtype)
    w = torch.randn(d_out, d_in, generator=g).to(dtype)
    dy = torch.randn(n, d_out, generator=g).to(dtype)
    flops = 2 * 2 * n * d_in * d_out  # forward + input gradient

    def once():
        torch.nn.functional.linear(x, w)
        dy @ w

    once()  # first call: kernel selection / JIT, not timed
    best, spent = float("inf"), 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        once()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return flops / best / 1e9


def calibrate_cpu() -> Calibration:
    """Time fp32 and bf16 on this CPU (no cache)."""
    t0 = time.perf_counter()
    fp32 = _gflops(torch.float32, 0.1)
    bf16 = _gflops(torch.bfloat16, 0.2)
    name, _ = _cpu_name_and_flags()
    isa = torch.backends.cpu.get_cpu_capability()
    if bf16 * BF16_MUST_BE_FASTER > fp32:  # bf16 takes less than 80% of fp32's time
        choice, reason = "bf16", (f"bf16 runs natively on this CPU ({isa}): {bf16:.1f} GFLOP/s vs fp32 "
                                  f"{fp32:.1f} GFLOP/s ({bf16 / fp32:.1f}x faster)")
    elif fp32 > 4 * bf16:
        choice, reason = "fp32", (f"bf16 is emulated on this CPU ({isa}): {bf16:.1f} GFLOP/s vs fp32 "
                                  f"{fp32:.1f} GFLOP/s ({fp32 / bf16:.0f}x slower)")
    else:
        choice, reason = "fp32", (f"bf16 is not clearly faster on this CPU ({isa}): {bf16:.1f} GFLOP/s vs fp32 "
                                  f"{fp32:.1f} GFLOP/s")
    return Calibration(key=machine_key(), cpu=name, isa=isa, threads=torch.get_num_threads(),
                       fp32_gflops=round(fp32, 2), bf16_gflops=round(bf16, 2), choice=choice, reason=reason,
                       seconds=round(time.perf_counter() - t0, 3))


def _cache_file():
    return cache_dir() / "cpu-calibration.json"


def cpu_calibration(refresh: bool = False) -> Calibration:
    """This machine's calibration: read from the cache folder, or measured now (and cached)."""
    path, key = _cache_file(), machine_key()
    if not refresh:
        try:
            cached = json.loads(path.read_text()).get(key)
            if cached:
                return Calibration(**cached)
        except (OSError, ValueError, TypeError):
            pass  # absent or unreadable: measure again
    cal = calibrate_cpu()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        entries[key] = asdict(cal)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder only costs the next run another calibration
    return cal


def resolve_precision(requested: str, device: torch.device, model_name: str = "") -> PrecisionChoice:
    """The precision a run computes in, and why. `requested` is "auto", "fp32" or "bf16"."""
    if requested in ("fp32", "bf16"):
        return PrecisionChoice(requested, f"{requested} was asked for")
    if requested != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {requested!r}")
    if model_name == "tiny-random":
        return PrecisionChoice("fp32", "tiny-random (a test model) always runs in fp32")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"{torch.cuda.get_device_name(device)} computes bf16 natively")
        return PrecisionChoice("fp32", f"{torch.cuda.get_device_name(device)} has no native bf16")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"{device.type}: fp32 (bf16 is calibrated on CPU and CUDA only)")
    cal = cpu_calibration()
    return PrecisionChoice(cal.choice, cal.reason, asdict(cal))
