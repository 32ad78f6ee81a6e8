"""One device rule for every forward pass bake makes (learning, evaluation, tuning trials,
verification, generation): `--device auto|cpu|cuda|cuda:N|mps` (a recipe's `device:`), `auto` by
default: the first CUDA device when there is one, else Apple's MPS, else the CPU.

A command chooses once (`using`; a recipe's choice through `prefer`); every model bake loads for a
forward pass goes there (`loading.load_model`) and its inputs follow the model (`to_model`). A pass
in a dtype the device lacks (MPS has no float64) runs on the CPU instead, and says so (`for_dtype`).
With per-device memory budgets (`--max-memory cuda:0=70GiB,cpu=100GiB`), accelerate spreads a model
over them and disk instead (`spread`). Baking itself is a streamed rewrite of the checkpoint's files
on the CPU and never reads this rule.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch

from ..errors import BakeError

CHOICES = "auto, cpu, cuda, cuda:N, mps"
_chosen: ContextVar[torch.device | None] = ContextVar("bake_device", default=None)
_budget: ContextVar[tuple[dict, str] | None] = ContextVar("bake_memory_budget", default=None)


def parse_size(size: str | int | None) -> int | None:
    """Bytes from a size ("2GB", "512MiB", "1.5G" or a number of bytes)."""
    import re

    if size is None or isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?\s*", str(size), re.IGNORECASE)
    if not m:
        raise BakeError(f"--max-memory {size!r}: give a size such as 8GB, 512MiB or a number of bytes")
    unit = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * unit ** "_KMGT".index(m.group(2).upper() or "_"))


def parse_budget(spec: str) -> dict:
    """accelerate's `max_memory` from `--max-memory`: "cuda:0=70GiB,cpu=100GiB" (per device), or one
    size, the CPU's ("8GiB"). What fits nowhere goes to disk."""
    out: dict = {}
    for part in (p.strip() for p in str(spec).split(",") if p.strip()):
        name, _, size = part.rpartition("=")
        name = name.strip().lower() or "cpu"
        if name == "cpu" or name == "mps":
            key = name
        elif name.startswith("cuda"):
            key = resolve(name).index  # checked against this machine: accelerate names a GPU by its index
        else:
            raise BakeError(f"--max-memory {spec}: {name!r} is not a device; give cpu=SIZE, cuda:N=SIZE or mps=SIZE")
        out[key] = parse_size(size)
    if not out:
        raise BakeError(f"--max-memory {spec!r}: give budgets such as cpu=8GiB or cuda:0=70GiB,cpu=100GiB")
    return out


def _mps() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve(spec: str | None = "auto") -> torch.device:
    """The device `spec` names, checked against what torch sees here (a clear error otherwise)."""
    s = str(spec or "auto").strip().lower()
    if s == "auto":
        if torch.cuda.is_available():  # one of several processes (accelerate launch, torchrun): its own GPU
            import os

            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
                                % torch.cuda.device_count())
        return torch.device("mps") if _mps() else torch.device("cpu")
    try:
        dev = torch.device(s)
    except (RuntimeError, ValueError):
        raise BakeError(f"--device {spec}: not a device; use one of {CHOICES}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise BakeError(f"--device {spec}: torch {torch.__version__} sees no CUDA device on this machine; "
                            "use --device cpu (or auto, which takes an accelerator only when there is one)")
        if dev.index is not None and dev.index >= n:
            raise BakeError(f"--device {spec}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
        return torch.device("cuda", dev.index or 0)
    if dev.type == "mps":
        if not _mps():
            raise BakeError(f"--device {spec}: torch sees no MPS (Apple GPU) device on this machine; use --device cpu")
        return dev
    raise BakeError(f"--device {spec}: bake runs its forward passes on {CHOICES}")


@contextmanager
def using(spec: str | torch.device | None, max_memory: str | dict | None = None):
    """Every forward pass inside runs on `spec` (checked first; None keeps the current choice). With
    `max_memory` (per-device budgets, `parse_budget`), every model is spread by accelerate over those
    devices, then disk (a temporary offload folder, removed at the end)."""
    from contextlib import ExitStack

    from ..files.tempdirs import temp_dir

    with ExitStack() as stack:
        if spec is not None:
            token = _chosen.set(spec if isinstance(spec, torch.device) else resolve(spec))
            stack.callback(_chosen.reset, token)
        if max_memory is not None:
            budget = max_memory if isinstance(max_memory, dict) else parse_budget(max_memory)
            token = _budget.set((budget, stack.enter_context(temp_dir("offload"))))
            stack.callback(_budget.reset, token)
        yield current()


@contextmanager
def prefer(spec: str | None, where: str = "the recipe's device"):
    """`spec` (a recipe's `device:`) unless the command line chose a device already."""
    if spec is None or _chosen.get() is not None:
        yield current()
        return
    try:
        dev = resolve(spec)
    except BakeError as e:
        raise BakeError(f"{where}: {e}".replace(f"--device {spec}: ", "", 1)) from None
    with using(dev) as d:
        yield d


def spread() -> dict:
    """from_pretrained's arguments that spread a model over the memory budget (none without one)."""
    import uuid

    b = _budget.get()
    if b is None:
        return {}
    budget, root = b
    return {"device_map": "auto", "max_memory": budget, "offload_folder": str(Path(root) / uuid.uuid4().hex)}


def current() -> torch.device:
    """The device of this command's forward passes (`auto` unless `using` chose one)."""
    return _chosen.get() or resolve("auto")


def for_dtype(dtype: torch.dtype, dev: torch.device | None = None) -> tuple[torch.device, str]:
    """(the device a pass in `dtype` runs on, why it is not the chosen one or ""): the chosen device,
    or the CPU where the device has no such dtype."""
    dev = dev or current()
    if dev.type == "mps" and dtype == torch.float64:
        return torch.device("cpu"), "MPS has no float64, so this float64 pass runs on the CPU"
    return dev, ""


def to_model(model, batch):
    """A tensor or a tokenizer's batch (a mapping of tensors) on the device of `model`'s parameters."""
    dev = next(model.parameters()).device
    if dev.type == "meta":  # a streamed skeleton: its modules run on the CPU as their weights are read
        dev = torch.device("cpu")
    if isinstance(batch, torch.Tensor):
        return batch.to(dev)
    return {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def describe(dev: torch.device) -> str:
    """The device in words, for reports: "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)
