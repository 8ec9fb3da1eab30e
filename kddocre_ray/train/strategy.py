"""How the model, optimizer and scheduler are distributed: DDP or DeepSpeed behind one interface,
`Strategy`, which states everything the loop (worker.py) uses.
- ddp: Ray Train's `prepare_model` (DDP across workers), torch AdamW, autocast for bf16 / fp16
  (with a GradScaler for fp16), clipping and accumulation done here.
- deepspeed: a DeepSpeed engine from a JSON file (ZeRO stage, offload, ...). Values written
  "auto" in the file (batch sizes, accumulation, clipping, precision) are filled from our
  config, so every fact has one home; anything else in the file wins.
"""
from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..checkpoint import WEIGHTS
from ..config import TrainConfig
from ..errors import InputError
from ..precision import autocast
from ..storage import read_json

OPTIM_STATE = "optim_state.pt"  # ddp: optimizer, scheduler and scaler state
DS_DIR = "deepspeed"  # deepspeed: the engine's own (possibly partitioned) checkpoint
DS_TAG = "state"


class Strategy(Protocol):
    """What the training loop uses of a distribution strategy, and nothing else."""

    model: nn.Module  # what the loop calls to train: the DDP wrapper or the DeepSpeed engine
    module: nn.Module  # the plain model inside it: evaluation, the probe, the saved weights
    scheduler: torch.optim.lr_scheduler.LRScheduler  # the loop reports its learning rates
    lockstep_eval: bool  # every rank must run the same evaluation batches (ZeRO-3 gathers weights in forward)

    def autocast(self) -> AbstractContextManager: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self, boundary: bool) -> None:
        """After each micro-batch; `boundary`: the last micro-batch of an accumulation step."""

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on every rank (a collective under ZeRO-3: every rank calls it)."""

    def save(self, directory: Path, rank: int) -> None:
        """What resuming needs beyond the weights (optimizer, scheduler, ...), into a checkpoint folder."""

    def load(self, directory: Path) -> None:
        """Weights and training state back from a checkpoint folder `save` wrote into."""


def param_groups(model: nn.Module, tc: TrainConfig) -> list[dict]:
    head = {id(p) for p in model.head_parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in head], "lr": tc.encoder_lr},
            {"params": model.head_parameters(), "lr": tc.head_lr}]


def make_optimizer(model: nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the two learning-rate groups. Fused on CPU and CUDA: one kernel per step
    instead of a Python loop of ~10 elementwise passes per tensor (the head's projection alone
    holds 19M parameters)."""
    return torch.optim.AdamW(param_groups(model, tc), eps=tc.adam_eps, weight_decay=tc.weight_decay,
                             fused=device.type in ("cpu", "cuda"))


def make_scheduler(optimizer, tc: TrainConfig, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(tc.warmup_ratio * total_steps), total_steps)


class DDPStrategy:
    """Ray Train's DDP; clipping, accumulation and fp16 loss scaling done here."""

    lockstep_eval = False

    def __init__(self, model: nn.Module, tc: TrainConfig, precision: str, device: torch.device, total_steps: int):
        import ray.train.torch

        self.optimizer = make_optimizer(model, tc, device)
        self.model = ray.train.torch.prepare_model(model)
        self.module = getattr(self.model, "module", self.model)
        self.scheduler = make_scheduler(self.optimizer, tc, total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.tc, self.precision, self.device = tc, precision, device

    def autocast(self):
        return autocast(self.precision, self.device)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss / self.tc.grad_accum).backward()

    def step(self, boundary: bool) -> None:
        """Clip and step at accumulation boundaries; gradients accumulate in between."""
        if not boundary:
            return
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad()

    def full_state_dict(self) -> dict:
        return self.module.state_dict()

    def save(self, directory: Path, rank: int) -> None:
        if rank == 0:
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "scaler": self.scaler.state_dict()}, directory / OPTIM_STATE)

    def load(self, directory: Path) -> None:
        self.module.load_state_dict(torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True))
        s = torch.load(directory / OPTIM_STATE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])


def deepspeed_config(path: str, tc: TrainConfig, precision: str | None, world: int) -> dict:
    """The JSON file with its "auto" values filled from our config. Read at the door (precision
    None when it resolves only on the workers' device) and again by each worker; what it refuses
    is an InputError naming the file and the key."""
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise InputError(f"expected a JSON object (a DeepSpeed config), got {type(cfg).__name__}", path=path)
    auto = {
        "train_micro_batch_size_per_gpu": ("train.batch_size", tc.batch_size),
        "gradient_accumulation_steps": ("train.grad_accum", tc.grad_accum),
        "train_batch_size": ("train.batch_size x train.grad_accum x workers", tc.batch_size * tc.grad_accum * world),
        "gradient_clipping": ("train.max_grad_norm", tc.max_grad_norm),
    }
    for key, (ours, value) in auto.items():
        given = cfg.get(key, "auto")
        if given == "auto":
            cfg[key] = value
        elif given != value and key != "gradient_clipping":  # the loop batches by our config: DeepSpeed would count other steps
            raise InputError(f'{given!r}, but {ours} makes it {value}: write "auto" or match the config',
                             path=path, field=key)
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict) or zero.get("stage", 0) not in (0, 1, 2, 3):
        raise InputError("expected an object with stage 0, 1, 2 or 3", path=path, field="zero_optimization")
    for name in ("bf16", "fp16"):
        section = cfg.setdefault(name, {})
        if not isinstance(section, dict) or section.get("enabled", "auto") not in (True, False, "auto"):
            raise InputError('expected {"enabled": true, false or "auto"}', path=path, field=name)
        enabled = section.get("enabled", "auto")
        if enabled == "auto":
            if precision is not None:
                section["enabled"] = precision == name
        elif precision is not None and enabled != (precision == name):
            # the run must report the precision it ran in: no file may silently override it
            raise InputError(f"enabled is {str(enabled).lower()} but train.precision resolves to {precision} here; "
                             'write "enabled": "auto" or set train.precision to match', path=path, field=name)
    if cfg["bf16"].get("enabled") is True and cfg["fp16"].get("enabled") is True:
        raise InputError("bf16 and fp16 are both enabled", path=path)
    return cfg


SHM_COMM_OP = "deepspeed_shm_comm"


def skip_shm_comm_build() -> None:
    """Keep DeepSpeed from compiling its shared-memory all-reduce op when it starts.

    On CPU, DeepSpeed's torch backend JIT-compiles `deepspeed_shm_comm` (g++, about a minute)
    under a torch lock file in ~/.cache/torch_extensions. Only `inference_all_reduce` uses it;
    training all-reduces through gloo either way. A worker killed mid-build (a stopped job, a
    preempted node) leaves the lock behind, and every later DeepSpeed run on that machine then
    waits on it forever: CI hung so. DeepSpeed keeps its table of buildable ops in one dict
    that it caches so that edits persist; marking the op unbuildable there skips the build.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False


class DeepSpeedStrategy:
    """A DeepSpeed engine: it holds the optimizer, scheduler, precision and accumulation itself."""

    def __init__(self, model: nn.Module, tc: TrainConfig, precision: str, device: torch.device,
                 total_steps: int, config_path: str, world: int):
        import deepspeed

        skip_shm_comm_build()
        self.config = deepspeed_config(config_path, tc, precision, world)
        optimizer = make_optimizer(model, tc, device)
        scheduler = make_scheduler(optimizer, tc, total_steps)
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.config)
        self.module = self.model.module
        self.stage = self.model.zero_optimization_stage()
        self.lockstep_eval = self.stage == 3

    def autocast(self):
        return contextlib.nullcontext()  # the engine holds the weights in the chosen precision

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)  # scales by 1 / accumulation steps itself

    def step(self, boundary: bool) -> None:
        self.model.step()  # called every micro-batch: the engine counts its own boundaries

    def full_state_dict(self) -> dict:
        """fp32 weights of the whole model on every rank (gathered under ZeRO-3)."""
        if self.stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
                return {k: v.detach().float().clone() for k, v in self.module.state_dict().items()}
        return {k: v.detach().float() for k, v in self.module.state_dict().items()}

    def save(self, directory: Path, rank: int) -> None:
        self.model.save_checkpoint(str(directory / DS_DIR), tag=DS_TAG)  # every rank writes its shard

    def load(self, directory: Path) -> None:
        self.model.load_checkpoint(str(directory / DS_DIR), tag=DS_TAG)


def make_strategy(name: str, model: nn.Module, tc: TrainConfig, precision: str, device: torch.device,
                  total_steps: int, world: int, deepspeed_config_path: str | None) -> Strategy:
    if name == "ddp":
        return DDPStrategy(model, tc, precision, device, total_steps)
    if name == "deepspeed":
        if not deepspeed_config_path:
            raise InputError("train.strategy=deepspeed needs train.deepspeed_config (e.g. configs/deepspeed/zero2.json)")
        return DeepSpeedStrategy(model, tc, precision, device, total_steps, deepspeed_config_path, world)
    raise InputError(f"train.strategy={name!r}; choose ddp or deepspeed")
