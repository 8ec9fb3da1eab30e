"""End to end through Ray Train on a local cluster, with the tiny random encoder: a run folder
that reloads, scores identically through the CLI, and resumes after the driver is killed."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, kill_when
from kddocre_ray.cli import main
from kddocre_ray.config import load_config

TINY = [
    "model.encoder=tiny-random", "model.max_length=128", "model.chunk_overlap=32",
    "data.train.end=16", "data.dev.end=6", "data.test.end=6", "train.head_lr=1e-3", "train.encoder_lr=1e-3",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import ray

    from kddocre_ray.train.run import run_train

    out = tmp_path_factory.mktemp("runs")
    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, "train.epochs=3", f"output_dir={out}", "name=t"])
    try:
        metrics = run_train(conf)
    finally:
        ray.shutdown()
    return out / "t", metrics


def test_run_folder_is_complete(run):
    run_dir, metrics = run
    for name in ("config.yaml", "result.json", "metrics.json", "checkpoint/model.pt", "checkpoint/encoder/config.json"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    records = json.loads((run_dir / "result.json").read_text())
    assert all(set(r) == {"title", "h_idx", "t_idx", "r", "evidence"} for r in records)
    assert not list(run_dir.glob(".*tmp*"))  # nothing half-written left behind
    # the precision the run reports is the one its worker and its scoring task resolved and used
    import torch

    from kddocre_ray.task import resolve_precision

    auto = resolve_precision("auto", torch.device("cpu"))
    assert metrics["precision"] == auto and metrics["scoring"] == {"device": "cpu", "precision": auto}


def test_loss_falls_and_history_is_complete(run):
    _, metrics = run
    losses = [h["train_loss"] for h in metrics["history"]]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert losses[-1] < losses[0]
    for split in ("dev", "test"):
        assert 0 <= metrics[split]["f1"] <= 100 and metrics[split]["docs"] == 6


def test_checkpoint_reloads_and_scores_the_same(run, capsys, tmp_path):
    """`evaluate --checkpoint` and `predict` on the run's own test split reproduce the run's
    result.json and test metrics exactly (Ign facts from the run's own train split)."""
    run_dir, metrics = run
    conf = load_config(REPO / "configs" / "tiny.yaml", TINY)
    test6 = tmp_path / "test6.json"
    test6.write_text(json.dumps(json.loads(Path(conf.data.test.path).read_text())[:6]))
    main(["evaluate", "--checkpoint", str(run_dir), "--data", str(test6), "--json"])
    scored = json.loads(capsys.readouterr().out)
    for key in ("f1", "ign_f1", "precision", "recall", "freq_f1", "C", "W", "MS", "MR"):
        assert scored[key] == pytest.approx(metrics["test"][key]), key
    main(["predict", "--checkpoint", str(run_dir), "--data", str(test6), "--out", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads((run_dir / "result.json").read_text())


def test_finished_run_is_not_overwritten_by_accident(run):
    from kddocre_ray.train.run import run_train

    run_dir, _ = run
    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, f"output_dir={run_dir.parent}", "name=t"])
    with pytest.raises(FileExistsError):
        run_train(conf)


def test_kddocre_train_distills_a_teacher_in_memory(run, tmp_path):
    """With distill.teacher, `kddocre train` computes that teacher's logits on its train split in
    the worker and trains on AFL + weight x MSE: both parts are logged and add up."""
    import ray

    from kddocre_ray.train.run import run_train

    teacher, _ = run
    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, "train.epochs=1", f"distill.teacher={teacher}",
                                                        "distill.kd=mse", "distill.weight=2.0", f"output_dir={tmp_path}",
                                                        "name=kd"])
    try:
        metrics = run_train(conf)
    finally:
        ray.shutdown()
    [h] = metrics["history"]
    assert h["train_kd_loss"] > 0 and h["train_re_loss"] > 0
    assert h["train_loss"] == pytest.approx(h["train_re_loss"] + 2.0 * h["train_kd_loss"], rel=1e-5)


@pytest.mark.parametrize("strategy", [
    ["train.strategy=ddp"],
    ["train.strategy=deepspeed", f"train.deepspeed_config={REPO}/configs/deepspeed/zero2.json", "scale.num_workers=2"],
], ids=["ddp", "deepspeed-zero2"])
def test_killed_run_resumes_from_its_last_checkpoint(strategy, tmp_path):
    """Kill the whole driver (and its local Ray cluster) after the first checkpoint, rerun the
    same command: it continues from that checkpoint (optimizer and scheduler included) and
    finishes all epochs."""
    cmd = [sys.executable, "-m", "kddocre_ray.cli", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
           *TINY, *strategy, "data.train.end=24", "train.epochs=3", f"output_dir={tmp_path}", "name=r"]
    snapshot = tmp_path / "r" / "ray" / "checkpoint_manager_snapshot.json"
    kill_when(cmd, snapshot.exists, "a checkpoint")
    assert not (tmp_path / "r" / "metrics.json").exists()
    tracked = json.loads((tmp_path / "r" / "tracking.json").read_text())  # the MLflow run opened before the kill

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from checkpoint after epoch" in second.stdout + second.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    # the resumed run continues its MLflow run: one run, every epoch once
    from mlflow import MlflowClient

    after = json.loads((tmp_path / "r" / "tracking.json").read_text())
    assert after["runs"] == tracked["runs"] and after["complete"]
    [run_id] = after["runs"].values()
    client = MlflowClient(after["uri"])
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) == [1, 2, 3]

