"""End to end through Ray Train on a local cluster, with the tiny random encoder: a run folder
(the session pipeline's teacher, a `kddocre train` run like any other) that reloads and scores
identically through the CLI; two workers that resume after the driver is killed, under DDP and
under DeepSpeed ZeRO-2, and whose checkpoint reproduces the model they trained."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY, assert_checkpoint_reproduces_its_probe, kill_when
from kddocre_ray.cli import main
from kddocre_ray.config import read_resolved


@pytest.fixture(scope="module")
def run(tiny_pipeline):
    """The teacher stage: 2 epochs on 8 documents, scored on 4 dev and 4 test documents."""
    folder = tiny_pipeline.stage("teacher")
    return folder, json.loads((folder / "metrics.json").read_text())


def test_run_folder_is_complete(run):
    run_dir, metrics = run
    for name in ("config.yaml", "result.json", "metrics.json", "checkpoint/model.pt", "checkpoint/encoder/config.json"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    records = json.loads((run_dir / "result.json").read_text())
    assert all(set(r) == {"title", "h_idx", "t_idx", "r", "evidence"} for r in records)
    assert not list(run_dir.glob(".*tmp*"))  # nothing half-written left behind
    # the precision the run reports is the one its worker and its scoring task used (fp32, as set;
    # `auto` is resolved in test_kddocre_train_distills_a_teacher_in_memory)
    assert metrics["precision"] == "fp32" and metrics["scoring"] == {"device": "cpu", "precision": "fp32"}


def test_loss_falls_and_history_is_complete(run):
    _, metrics = run
    losses = [h["train_loss"] for h in metrics["history"]]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert losses[-1] < losses[0]
    for split in ("dev", "test"):
        assert 0 <= metrics[split]["f1"] <= 100 and metrics[split]["docs"] == 4


def test_checkpoint_reloads_and_scores_the_same(run, capsys, tmp_path):
    """`evaluate --checkpoint` and `predict` on the run's own test split reproduce the run's
    result.json and test metrics exactly (Ign facts from the run's own train split)."""
    run_dir, metrics = run
    conf = read_resolved(run_dir / "config.yaml")
    test4 = tmp_path / "test4.json"
    test4.write_text(json.dumps(json.loads(Path(conf.data.test.path).read_text())[:conf.data.test.end]))
    main(["evaluate", "--checkpoint", str(run_dir), "--data", str(test4), "--json"])
    scored = json.loads(capsys.readouterr().out)
    for key in ("f1", "ign_f1", "precision", "recall", "freq_f1", "C", "W", "MS", "MR"):
        assert scored[key] == pytest.approx(metrics["test"][key]), key
    main(["predict", "--checkpoint", str(run_dir), "--data", str(test4), "--out", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads((run_dir / "result.json").read_text())


def test_finished_run_is_not_overwritten_by_accident(run):
    import ray

    from kddocre_ray.train.run import run_train

    run_dir, _ = run
    with pytest.raises(FileExistsError):
        run_train(read_resolved(run_dir / "config.yaml"))
    assert not ray.is_initialized()  # refused before any Ray start


def test_kddocre_train_distills_a_teacher_in_memory(run, tmp_path, monkeypatch):
    """With distill.teacher, `kddocre train` computes that teacher's logits on its train split in
    the worker and trains on AFL + weight x MSE: both parts are logged and add up. The run also
    resolves `train.precision=auto` (in its worker and its scoring task alike), and with
    `tracking.enabled=false` it leaves no trace in MLflow: no store is created, no tracking.json."""
    import ray
    import torch

    from kddocre_ray.precision import resolve_precision

    teacher, _ = run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    args = [*TINY, "data.train.end=8", "data.dev.end=4", "data.test.end=4", "train.epochs=1",
            f"distill.teacher={teacher}", "distill.kd=mse", "distill.weight=2.0", "tracking.enabled=false",
            f"output_dir={tmp_path}", "name=kd"]
    try:
        main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), *args])
    finally:
        ray.shutdown()
    metrics = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    [h] = metrics["history"]
    assert h["train_kd_loss"] > 0 and h["train_re_loss"] > 0
    assert h["train_loss"] == pytest.approx(h["train_re_loss"] + 2.0 * h["train_kd_loss"], rel=1e-5)
    auto = resolve_precision("auto", torch.device("cpu"))
    assert metrics["precision"] == auto and metrics["scoring"] == {"device": "cpu", "precision": auto}
    assert not (tmp_path / "never.db").exists() and not (tmp_path / "kd" / "tracking.json").exists()


def kill_cmd(strategy: list[str], out, name: str) -> list[str]:
    """Two workers (16 documents, batch 4: 2 steps per epoch on each), 2 epochs, fp32."""
    return [sys.executable, "-m", "kddocre_ray.cli", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
            *TINY, *strategy, "scale.num_workers=2", "train.precision=fp32", "data.train.end=16", "train.epochs=2",
            f"output_dir={out}", f"name={name}"]


def killed_by_hand(strategy: list[str], out) -> tuple[dict, str]:
    """Kill the whole driver after the first checkpoint, rerun the same command; returns the
    MLflow record from before the kill and the rerun's log."""
    cmd = kill_cmd(strategy, out, "r")
    snapshot = out / "r" / "ray" / "checkpoint_manager_snapshot.json"
    kill_when(cmd, snapshot.exists, "a checkpoint")
    assert not (out / "r" / "metrics.json").exists()
    tracked = json.loads((out / "r" / "tracking.json").read_text())  # the MLflow run opened before the kill
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    return tracked, second.stdout + second.stderr


def assert_every_epoch_once(run_dir, tracked: dict | None = None) -> None:
    """metrics.json and the run's one MLflow run hold epochs 1 and 2 once each; the loss falls."""
    from mlflow import MlflowClient

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert [h["step"] for h in metrics["history"]] == [2, 4] and metrics["workers"] == 2
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0]
    after = json.loads((run_dir / "tracking.json").read_text())
    assert after["complete"] and (tracked is None or after["runs"] == tracked["runs"])
    [run_id] = after["runs"].values()
    client = MlflowClient(after["uri"])
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) == [1, 2]


@pytest.fixture(scope="module")
def resumed_by_hand(tmp_path_factory):
    out = tmp_path_factory.mktemp("by-hand")
    tracked, log = killed_by_hand(["train.strategy=ddp"], out)
    return out / "r", tracked, log


def test_two_killed_workers_resume_from_their_last_checkpoint(resumed_by_hand):
    """Kill the whole driver (and its local Ray cluster) after the first checkpoint, rerun the
    same command: it continues from that checkpoint (optimizer and scheduler included) and
    finishes all epochs, in the MLflow run it had opened. Two DDP workers train, the loss falls,
    and the kept checkpoint reproduces the model they trained: its reloaded weights give the
    logits its probe document had in the workers. (A DeepSpeed ZeRO-2 run resuming from its
    checkpoint: test_pipeline's student, whose worker is killed after its first checkpoint.)"""
    run_dir, tracked, log = resumed_by_hand
    assert "resumed from checkpoint after epoch" in log
    assert_every_epoch_once(run_dir, tracked)
    assert_checkpoint_reproduces_its_probe(run_dir / "checkpoint")


def test_a_worker_killed_mid_epoch_is_restarted_from_the_last_checkpoint(resumed_by_hand, ray_head, tmp_path):
    """SIGKILL one Ray Train worker (found through Ray's state API) after the first checkpoint: the
    run restarts its worker group from that checkpoint by itself (scale.max_failures, default 3)
    and finishes in the same command, each epoch once in metrics.json and in MLflow, with the
    weights of the same run killed at the same point and resumed by hand."""
    import signal
    import time

    import torch
    from ray.util.state import list_actors

    out = open(tmp_path / "log.txt", "w")  # a pipe left unread while the test waits could fill and stall the run
    proc = subprocess.Popen(kill_cmd(["train.strategy=ddp"], tmp_path, "w"), cwd=REPO, stdout=out,
                            stderr=subprocess.STDOUT, text=True)
    snapshot = tmp_path / "w" / "ray" / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 300
    while not snapshot.exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint"
        time.sleep(0.2)
    workers = list_actors(address=ray_head.dashboard, filters=[("class_name", "=", "RayTrainWorker"),
                                                                ("state", "=", "ALIVE")], detail=True)
    assert len(workers) == 2
    os.kill(workers[0].pid, signal.SIGKILL)
    proc.wait(timeout=600)
    out.close()
    log = (tmp_path / "log.txt").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert log.count("resumed from checkpoint after epoch 1") == 1
    assert_every_epoch_once(tmp_path / "w")

    _, _, by_hand_log = resumed_by_hand
    assert "resumed from checkpoint after epoch 1" in by_hand_log  # the same kill point
    mine = torch.load(tmp_path / "w" / "checkpoint" / "model.pt", weights_only=True)
    theirs = torch.load(resumed_by_hand[0] / "checkpoint" / "model.pt", weights_only=True)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
