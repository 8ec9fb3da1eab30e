"""DDP and DeepSpeed (ZeRO-2, ZeRO-3) behind one switch, on two CPU workers over gloo: each
trains with falling loss, and the checkpoint it writes reloads into a model that reproduces the
in-memory model's logits. ZeRO-3 here; DDP and ZeRO-2 in test_train_ray's kill-and-resume
test, which checks the same of two killed and resumed workers."""
import json
import os

import pytest
import torch

from conftest import REPO, TINY, assert_checkpoint_reproduces_its_probe
from kddocre_ray.config import TrainConfig, load_config
from kddocre_ray.errors import InputError
from kddocre_ray.train.strategy import deepspeed_config, make_optimizer

STRATEGIES = {
    "zero3": ["train.strategy=deepspeed", f"train.deepspeed_config={REPO}/configs/deepspeed/zero3.json"],
}


def test_deepspeed_auto_values_come_from_our_config(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": "auto", "gradient_clipping": 0.5, "bf16": {"enabled": "auto"},
                                "zero_optimization": {"stage": 2}}))
    cfg = deepspeed_config(str(path), TrainConfig(batch_size=4, grad_accum=2, max_grad_norm=1.0), "bf16", world=2)
    assert cfg["train_batch_size"] == 16 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["gradient_clipping"] == 0.5  # written in the file: the file wins
    assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False
    assert cfg["zero_optimization"] == {"stage": 2}


def test_optimizer_is_fused_adamw_with_encoder_and_head_learning_rates():
    """Both strategies build this optimizer: fused on CPU, encoder and head at their own rates,
    every parameter in exactly one group."""
    from kddocre_ray.config import ModelConfig
    from kddocre_ray.model.docre import DocREModel
    from kddocre_ray.model.encoder import load_encoder

    model = DocREModel(load_encoder("tiny-random"), ModelConfig(encoder="tiny-random", emb_size=16, block_size=4), 5)
    opt = make_optimizer(model, TrainConfig(encoder_lr=5e-5, head_lr=1e-4, adam_eps=1e-6), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    enc, head = opt.param_groups
    assert (enc["lr"], head["lr"], enc["eps"]) == (5e-5, 1e-4, 1e-6)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert {id(p) for p in head["params"]} == {id(p) for p in model.head_parameters()}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_two_workers_train_and_checkpoint_reproduces_the_model(strategy, tmp_path):
    import ray

    from kddocre_ray.train.run import run_train

    conf = load_config(REPO / "configs" / "tiny.yaml", [
        *TINY, *STRATEGIES[strategy], "train.epochs=2", "train.precision=fp32", "scale.num_workers=2",
        f"output_dir={tmp_path}", "name=s"])
    try:
        metrics = run_train(conf)
    finally:
        ray.shutdown()
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[1] < losses[0]
    assert [h["step"] for h in metrics["history"]] == [2, 4]  # 16 docs / (batch 4 x 2 workers)

    assert_checkpoint_reproduces_its_probe(tmp_path / "s" / "checkpoint")


def test_deepspeed_file_that_forces_another_precision_is_refused(tmp_path):
    """The run reports the precision it runs in: a file hard-coding fp16 under a bf16 run is an
    error, not a silent fp16 run logged as bf16; the V100 file runs when fp16 is what was asked."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"fp16": {"enabled": True}}))
    with pytest.raises(InputError, match="ds.json: fp16: enabled is true but train.precision resolves to bf16"):
        deepspeed_config(str(path), TrainConfig(), "bf16", world=1)
    cfg = deepspeed_config(str(REPO / "configs" / "deepspeed" / "v100_fp16.json"), TrainConfig(), "fp16", world=1)
    assert cfg["fp16"]["enabled"] is True and cfg["bf16"]["enabled"] is False


STALE_LOCK_INIT = """
import os, sys, torch
from torch.utils.cpp_extension import _get_build_directory
from kddocre_ray.config import ModelConfig, TrainConfig
from kddocre_ray.model.docre import DocREModel
from kddocre_ray.model.encoder import load_encoder
from kddocre_ray.train.strategy import SHM_COMM_OP, DeepSpeedStrategy

open(os.path.join(_get_build_directory(SHM_COMM_OP, False), "lock"), "w").close()  # a build killed midway
model = DocREModel(load_encoder("tiny-random"), ModelConfig(encoder="tiny-random", emb_size=16, block_size=4), 5)
s = DeepSpeedStrategy(model, TrainConfig(), "fp32", torch.device("cpu"), 10, sys.argv[1], world=1)
before = [p.detach().clone() for p in s.module.parameters()]
s.backward(sum(p.sum() for p in s.module.parameters()))
s.step(boundary=True)
print("moved", sum(not torch.equal(a, b) for a, b in zip(before, s.module.parameters())))
"""


def test_deepspeed_starts_past_a_stale_torch_extension_lock(tmp_path):
    """A worker killed while DeepSpeed compiled its shared-memory op (used only for inference
    all-reduce) leaves a lock file in the torch extensions folder; DeepSpeed must still start
    and train (over gloo), not wait on the lock forever as it did in CI. One process, world 1."""
    import subprocess
    import sys

    from conftest import free_port

    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-c", STALE_LOCK_INIT, str(REPO / "configs" / "deepspeed" / "zero2.json")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    moved = int(done.stdout.split("moved")[-1])
    assert moved > 0  # the step updated the weights
    assert list((tmp_path / "ext").rglob("lock")) and not list((tmp_path / "ext").rglob("*.so"))  # nothing was built
