"""Training utilities shared by every problem: seeding, device, precision, atomic checkpoints,
EMA, metrics.jsonl, clean stop on SIGTERM/SIGINT, NaN guard.

A run folder (``runs/<name>/``) holds ``config.json``, ``metrics.jsonl``, ``last.pt`` (full resume
state, written atomically) and samples. Rerunning the same command resumes from ``last.pt``.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from common.errors import UserError

CHECKPOINT_VERSION = 1
C = TypeVar("C")


# ----------------------------------------------------------------------------- seeding / device
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) in one place."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA GPU is available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}") from None


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (oneDNN: AVX512-BF16 or AMX), so bf16 autocast is faster
    than fp32 rather than emulated (slower)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cache_dir() -> Path:
    """Cache root for this project: ``$HW2_CACHE`` or ``~/.cache/hw2``."""
    return Path(os.environ.get("HW2_CACHE") or Path.home() / ".cache" / "hw2")


def _time_conv(bf16: bool, backward: bool) -> float:
    conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.SiLU(), nn.Conv2d(64, 64, 3, padding=1))
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(64, 64, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_(backward)
    t = time.perf_counter()
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(backward):
            y = conv(x).float().sum()
        if backward:
            y.backward()
    return time.perf_counter() - t


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_faster(threads: int | None = None) -> bool:
    """Whether bf16 autocast beats fp32 on this CPU for conv nets: it needs native bf16
    (``cpu_has_bf16``) and, measured once (~1 s, interleaved repeats of a conv block forward and
    backward) and cached in ``cache_dir()/cpu_bf16.json`` per CPU model, torch version and thread
    count, to be at least 10 % faster. (Some CPUs with AVX512-BF16 run these kernels slower in bf16.)"""
    if not cpu_has_bf16():
        return False
    import platform
    threads = threads or torch.get_num_threads()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    key = f"{model} | torch {torch.__version__} | {threads} threads"
    path = cache_dir() / "cpu_bf16.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        with torch.random.fork_rng(devices=[]):  # the probe must not move the caller's random stream
            _time_conv(False, True), _time_conv(True, True)  # warm-up: kernels chosen, memory allocated
            fp32, bf16 = [], []
            for _ in range(3):
                fp32.append(_time_conv(False, True))
                bf16.append(_time_conv(True, True))
        known[key] = {"fp32_s": round(sorted(fp32)[1], 4), "bf16_s": round(sorted(bf16)[1], 4)}
        try:
            atomic_write_json(path, known)
        except OSError:
            pass  # a read-only home: measured again next time
    return known[key]["bf16_s"] < 0.9 * known[key]["fp32_s"]


def resolve_precision(precision: str, device: torch.device) -> str:
    """The inference precision ``precision`` means on ``device``: ``auto`` -> fp16 on CUDA, bf16 on a
    CPU where bf16 is native and measured faster (``cpu_bf16_is_faster``), else fp32; anything else as
    given (checked)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if device.type == "cpu" and cpu_bf16_is_faster() else "fp32"


def inference_autocast(precision: str, device: torch.device):
    """Autocast context for a forward pass at ``resolve_precision(precision, device)`` (fp32: none)."""
    p = resolve_precision(precision, device)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)


class TrainPrecision:
    """Mixed precision of a training step: ``autocast()`` around forward + loss, ``scaler`` (a CUDA
    GradScaler for fp16, else None). ``auto`` is bf16 on a CPU where it is native and measured faster
    (``cpu_bf16_is_faster``) and on CUDA where supported, fp16 with a GradScaler on other CUDA GPUs,
    fp32 elsewhere.
    The weights, optimiser states and the optimiser step stay fp32."""

    def __init__(self, precision: str, device: torch.device):
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "auto":
            if device.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                precision = "bf16" if device.type == "cpu" and cpu_bf16_is_faster() else "fp32"
        if precision == "fp16" and device.type != "cuda":
            raise UserError("fp16 training needs a CUDA GPU (on a CPU use bf16 or fp32)")
        self.name, self.device = precision, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        """Before gradient clipping: bring fp16-scaled gradients back to their true size."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            opt.step()
        else:
            self.scaler.step(opt)

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, sd: dict | None) -> None:
        if self.scaler is not None and sd:
            self.scaler.load_state_dict(sd)


# ----------------------------------------------------------------------------- files
def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


def umask_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """mkstemp / mkdtemp create 0600 / 0700: give ``path`` the mode a new file (or folder) would get
    under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """``write(file)`` into a temp file in the same folder, fsync, ``os.replace``: never a half-written
    file, not even after a power loss; the file gets the usual umask mode, and temp files that
    killed earlier writes of the same path left behind are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask_mode(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temps(path: str | os.PathLike, older_than_s: float = 60.0) -> int:
    """Delete temp files an earlier, killed write of ``path`` left behind (``.<name>.*.tmp``)."""
    path, n = Path(path), 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                n += 1
        except OSError:
            pass
    return n


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (``atomic_write``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def load_checkpoint(path: str | os.PathLike, hint: str = "") -> dict:
    """``torch.load(weights_only=True)`` on CPU with one-line errors for a missing/broken file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}" + (f" ({hint})" if hint else ""))
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes)" + (f" ({hint})" if hint else ""))
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, ...
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(ck, dict):
        raise UserError(f"{path} is not a checkpoint of this project (a {type(ck).__name__}, not a dict)")
    return ck


def load_states(path: str | os.PathLike, ckpt: dict, pairs: list[tuple[Any, str]], advice: str) -> None:
    """``obj.load_state_dict(ckpt[key])`` for each ``(obj, key)``; a missing key or mismatch is one
    ``UserError`` naming ``path`` and ending with ``advice``."""
    try:
        for obj, key in pairs:
            obj.load_state_dict(ckpt[key])
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"{path} does not match this model/config ({type(e).__name__}: "
                        f"{first_line(e, 150)}); {advice}") from None


def half_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 CPU copy of float tensors (for shipped weights: loadable without a GPU); others moved to the CPU."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in sd.items()}


def float_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


# ----------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's parameters (buffers copied as they are).

    ``ema.module`` is a frozen copy used for sampling/evaluation; ``update(model)`` after each step.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.num_updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = self.decay
        if self.warmup:  # short runs: average over the steps seen so far (as in timm/lucidrains)
            d = min(d, (1 + self.num_updates) / (10 + self.num_updates))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, sd: dict) -> None:
        self.module.load_state_dict(sd["module"])
        self.num_updates = int(sd["num_updates"])


# ----------------------------------------------------------------------------- logging / stop
class MetricsLog:
    """Append one JSON object per line to ``metrics.jsonl`` (flushed at once).

    ``resume_from=step``: the run goes on from its checkpoint at ``step``, so the rows of later steps
    (written after that save by a run that was then killed) and a torn last line are dropped first:
    every step appears once, as in an uninterrupted run."""

    def __init__(self, path: str | os.PathLike, resume_from: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from is not None and self.path.is_file():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # torn by a kill mid-write
                if not isinstance(rec, dict) or int(rec.get("step", 0) or 0) <= resume_from:
                    kept.append(line)
            atomic_write_bytes(self.path, "".join(k + "\n" for k in kept).encode())

    def write(self, **record: Any) -> None:
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read(self) -> list[dict]:
        return read_jsonl(self.path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill: skip it
    return out


class GracefulStop:
    """Turns SIGTERM/SIGINT into a flag the loop checks, so it saves and exits cleanly.

    A second signal while stopping raises KeyboardInterrupt as usual.
    """

    def __init__(self):
        self.requested = False
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not in the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


class NonFiniteLoss(UserError):
    """A loss became NaN or inf: training stops, the last good checkpoint is kept."""


def check_finite(step: int, **losses: float) -> None:
    """Raise ``NonFiniteLoss`` naming the loss and step when any value is NaN or inf."""
    for name, v in losses.items():
        if not math.isfinite(float(v)):
            raise NonFiniteLoss(f"loss {name} is {v} at step {step}; stopped, last good checkpoint kept "
                                f"(try a lower learning rate)")


def rng_state() -> dict:
    """Every global RNG's full state (torch, CUDA, numpy, Python), loadable with weights_only=True."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy": keys.tolist(), "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(gauss)],
          "python": list(internal), "python_version": version, "python_gauss": gauss_next}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    """Restore ``rng_state()``'s RNGs (states saved by earlier releases: torch, CUDA and numpy's keys)."""
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    if "numpy" in st:
        has_gauss, gauss = st.get("numpy_gauss", (0, 0.0))
        np.random.set_state(("MT19937", np.asarray(st["numpy"], dtype=np.uint32), int(st.get("numpy_pos", 624)),
                             int(has_gauss), float(gauss)))
    if "python" in st:
        random.setstate((int(st.get("python_version", 3)), tuple(int(v) for v in st["python"]), st.get("python_gauss")))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
