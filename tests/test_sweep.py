"""Ray Tune sweeps (sweep.py) on a local Ray cluster with the tiny encoder: trials that must
differ (a learning rate that overfits the dev split against a learning rate of 0), ASHA stopping
the weak one, one MLflow run per trial, the best trial picked by dev F1, and a rerun restoring
the finished sweep instead of running it again. The search space is checked before any work."""
import json
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE, WorkerKiller
from kddocre_ray.config import load_config, read_resolved

# Train and dev are the same 8 documents: a high learning rate overfits them (dev F1 rises to
# about 8-27 in 4 epochs), a learning rate of 0 leaves the random model (dev F1 below 1).
OVERFIT = {"encoder_lr": 3e-3, "head_lr": 3e-3}
FROZEN = {"encoder_lr": 0.0, "head_lr": 0.0}
SWEEP = [
    "model.encoder=tiny-random", "model.max_length=128", "model.chunk_overlap=32",
    f"data.train.path={SAMPLE / 'dev.json'}", "data.train.end=8", "data.dev.end=8", "data.test.end=4",
    "train.epochs=4", "train.batch_size=2", "train.warmup_ratio=0", "train.precision=fp32",
    # the overfitting trial runs first, so ASHA has its epochs to judge the frozen one by
    "sweep.space.train=[{encoder_lr: 3e-3, head_lr: 3e-3}, {encoder_lr: 0, head_lr: 0}]",
    "sweep.grace_period=1", "sweep.reduction_factor=2", "tracking.experiment=sweep-test", "name=lr_sweep",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, ray_head):
    """The sweep, with one trial's Ray Train worker SIGKILLed after that trial's first checkpoint:
    the trial restarts its worker group from the checkpoint (scale.max_failures) and goes on; the
    tests below find every trial whole, each epoch reported once."""
    import ray

    from kddocre_ray.sweep import run_sweep

    out = tmp_path_factory.mktemp("sweeps")
    conf = load_config(REPO / "configs" / "tiny.yaml", [*SWEEP, f"output_dir={out}"])

    def checkpointed() -> bool:
        return any(out.rglob("checkpoint_manager_snapshot.json"))

    try:
        with WorkerKiller(ray_head.dashboard, checkpointed) as killer:
            summary = run_sweep(conf)
    finally:
        ray.shutdown()
    assert killer.killed, "no trial worker was killed"
    return conf, summary


def _runs(mlflow_store: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("sweep-test")
    return client, client.search_runs([experiment.experiment_id])


def test_the_trial_with_the_highest_dev_f1_is_reported_best(sweep):
    conf, summary = sweep
    [good] = [r for r in summary["trials"] if r["values"]["train"] == OVERFIT]
    [frozen] = [r for r in summary["trials"] if r["values"]["train"] == FROZEN]
    assert good["dev_f1"] > frozen["dev_f1"]
    assert summary["best"]["trial"] == good["trial"]
    # ASHA stopped the frozen trial at a rung; the overfitting one ran all 4 epochs and was scored
    assert frozen["status"] == "stopped early" and frozen["epochs"] < 4
    assert good["status"] == "done" and good["epochs"] == 4 and good["test_f1"] is not None
    teacher = Path(summary["best"]["stage_folder"])
    best_conf = load_config(f"{conf.output_dir}/{conf.name}/best.yaml")
    assert (best_conf.train.encoder_lr, best_conf.train.head_lr) == (3e-3, 3e-3)
    # the trial's teacher is the pipeline's teacher stage: committed with its manifest
    assert json.loads((teacher / "manifest.json").read_text())["stage"] == "teacher"
    table = (Path(conf.output_dir) / conf.name / "results.md").read_text()
    assert good["trial"] in table and "stopped early" in table
    # the plot's data: the dev F1 of every epoch a trial ran, whose maximum is its best
    for row in summary["trials"]:
        assert [e for e, _ in row["curve"]] == list(range(1, row["epochs"] + 1))
        assert max(v for _, v in row["curve"]) == row["dev_f1"]
    assert (Path(conf.output_dir) / conf.name / "plots" / "sweep.png").stat().st_size > 10_000


def test_every_trial_is_one_mlflow_run_with_its_values_and_dev_f1(sweep, mlflow_store):
    conf, summary = sweep
    client, runs = _runs(mlflow_store)
    assert len(runs) == len(summary["trials"]) == 2
    by_name = {r.info.run_name: r for r in runs}
    for row in summary["trials"]:
        run = by_name[f"{conf.name}/{row['trial']}"]
        p = run.data.params
        assert float(p["train.encoder_lr"]) == row["values"]["train"]["encoder_lr"]
        assert float(p["train.head_lr"]) == row["values"]["train"]["head_lr"]
        assert float(p["loss.gamma"]) == 0.5 and run.data.tags["kddocre.sweep"] == conf.name
        history = client.get_metric_history(run.info.run_id, "dev_f1")
        assert [m.step for m in history] == list(range(1, row["epochs"] + 1))
        assert max(m.value for m in history) == pytest.approx(row["dev_f1"])
        assert run.info.status == "FINISHED"
    # the best trial by the store's own numbers is the one the sweep reported
    best = max(runs, key=lambda r: r.data.metrics.get("best_dev_f1", -1))
    assert best.info.run_name == f"{conf.name}/{summary['best']['trial']}"
    stopped = [r for r in runs if r.data.tags.get("kddocre.stopped_early") == "true"]
    assert len(stopped) == 1 and "test_f1" not in stopped[0].data.metrics


def test_a_rerun_restores_the_finished_sweep(sweep, mlflow_store):
    """Tuner.restore picks the sweep up from its folder: no trial runs again, no MLflow run is added."""
    import ray

    from kddocre_ray.sweep import run_sweep

    conf, summary = sweep
    try:
        again = run_sweep(conf)
    finally:
        ray.shutdown()
    assert again["best"]["trial"] == summary["best"]["trial"]
    assert [r["dev_f1"] for r in again["trials"]] == [r["dev_f1"] for r in summary["trials"]]
    assert len(_runs(mlflow_store)[1]) == 2


def test_a_sweep_folder_refuses_another_sweep(sweep):
    from kddocre_ray.sweep import run_sweep

    conf, _ = sweep
    conf = load_config(REPO / "configs" / "tiny.yaml", [*SWEEP, f"output_dir={conf.output_dir}", "loss.gamma=1.0"])
    with pytest.raises(ValueError, match="loss.gamma"):
        run_sweep(conf)


def test_a_kd_level_sweep_shares_one_teacher_and_its_soft_labels(tiny_pipeline):
    """The trials share the teacher, rows and soft labels, complete before any trial (here the
    session pipeline's: the sweep runs beside it) and skipped by each; a trial trains its own
    student and fine-tuning, which differ by the KD weight swept, and reports the fine-tuning's
    epochs. The trial at the pipeline's own weight (1.0) finds those complete too, skips them and
    replays the fine-tuning's epochs to Tune: the same values are never trained twice."""
    import ray

    from conftest import pipeline_stages
    from kddocre_ray.sweep import run_sweep

    shared = pipeline_stages(tiny_pipeline.run_dir)
    conf = load_config(REPO / "configs" / "tiny.yaml", [
        *tiny_pipeline.args, "sweep.level=kd", "sweep.scheduler=fifo", "sweep.space.distill.weight=[1.0, 2.0]",
        "tracking.enabled=false", "name=kd_sweep", f"output_dir={tiny_pipeline.out}"])
    try:
        summary = run_sweep(conf)
    finally:
        ray.shutdown()
    assert sorted(r["values"]["distill.weight"] for r in summary["trials"]) == [1.0, 2.0]
    finetunes = set()
    for row in summary["trials"]:
        run_dir = tiny_pipeline.out / "kd_sweep" / "trials" / row["trial"]
        status = {k: v["status"] for k, v in json.loads((run_dir / "pipeline.json").read_text())["stages"].items()}
        folders = pipeline_stages(run_dir)
        for name in ("teacher", "ingest", "soft_labels"):
            assert folders[name] == shared[name]
        own = "skipped" if row["values"]["distill.weight"] == 1.0 else "ran"
        assert status == {"teacher": "skipped", "ingest": "skipped", "soft_labels": "skipped", "student": own,
                          "finetune": own, "evaluate": "ran"}
        assert (folders["student"] == shared["student"]) == (own == "skipped")
        assert read_resolved(folders["student"] / "config.yaml").distill.weight == row["values"]["distill.weight"]
        assert row["status"] == "done" and row["epochs"] == 1 and Path(row["stage_folder"]) == folders["finetune"]
        finetunes.add(folders["finetune"])
    assert len(finetunes) == 2


@pytest.mark.parametrize("overrides, message", [
    (["sweep.space.loss.gama=[1]"], "loss.gama is not a config key"),
    (["sweep.space.loss.gamma=[fast]"], "could not be converted"),
    (["sweep.space.loss.gamma={uniform: [2, 1]}"], "lo < hi"),
    (["sweep.space.loss.gamma=[]"], "empty grid"),
    (["sweep.space.distill.weight=[1, 2]"], "do not all train different teachers"),
    (["sweep.level=kd", "sweep.space.loss.gamma=[0, 1]"], "changes the teacher or the soft labels"),
    (["sweep.space.loss.gamma=[0, 1]", "sweep.num_samples=2"], "put train.seed in sweep.space"),
    (["distill.kd=none"], "NA has no teacher"),
    (["sweep.metric=train_loss"], "sweep.metric"),
    (["data.dev=null"], "a sweep ranks its trials by dev_f1: set data.dev"),
    (["sweep.reduction_factor=1"], "reduction_factor=1 must be >= 2"),
    (["sweep.max_concurrent_trials=-1"], "sweep.max_concurrent_trials=-1 must be >= 0"),
    (["sweep.space.loss.gamma={}"], "sweep.space.loss.gamma: an empty mapping"),
    (["sweep.space={'train[epochs]': [1, 2]}"], "sweep.space.train[epochs]: not a dotted config key"),
])
def test_a_bad_search_space_ends_with_status_2_before_any_work(tmp_path, capsys, monkeypatch, overrides, message):
    import ray

    from kddocre_ray.cli import main

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--config", str(REPO / "configs" / "tiny.yaml"), *overrides, f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1, err


def test_the_default_space_is_the_papers_gamma_grid_and_kd_keys_pass_at_kd_level():
    from ray import tune

    from kddocre_ray.sweep import check_space, search_space

    conf = load_config(REPO / "configs" / "tiny.yaml")
    assert search_space(conf) == {"loss.gamma": tune.grid_search([0.0, 0.5, 1.0, 1.5, 2.0])}
    check_space(conf)
    kd = load_config(REPO / "configs" / "tiny.yaml", [
        "sweep.level=kd", "sweep.space.distill.weight=[0.5, 2]",
        "sweep.space.pipeline.finetune_head_lr={loguniform: [1e-5, 1e-3]}", "sweep.num_samples=2"])
    check_space(kd)
    space = search_space(kd)
    assert set(space) == {"distill.weight", "pipeline.finetune_head_lr"}


class _Result:
    """What `summarize` reads of a ray.tune Result: its config, last result, per-epoch dataframe."""

    def __init__(self, path: Path, gamma: float, dev_f1: list[float], done: bool):
        import pandas as pd

        self.path, self.error, self.config = str(path), None, {"loss.gamma": gamma}
        self.metrics = {"trial_id": path.name, "done": done}
        self.metrics_dataframe = None if not dev_f1 else pd.DataFrame(
            {"epoch": range(1, len(dev_f1) + 1), "dev_f1": dev_f1, "stage_folder": str(path)})


class _Grid(list):
    """What `summarize` reads of a ray.tune ResultGrid: its results and how many trials ended."""

    def __init__(self, results: list[_Result], terminated: int, errors: int):
        super().__init__(results)
        self.num_terminated, self.num_errors = terminated, errors

    def get_best_result(self, **_):
        raise AssertionError("no trial may be named best here")


def test_an_interrupted_sweep_reports_its_unfinished_trials_and_names_no_best(tmp_path):
    """Ctrl-C (or a stopped job) returns Tune's grid early: the table keeps what ran, marks the
    killed trials unfinished (not 'stopped early'), and no best.yaml names a premature winner."""
    from kddocre_ray.storage import location
    from kddocre_ray.sweep import summarize

    conf = load_config(REPO / "configs" / "tiny.yaml", [f"output_dir={tmp_path}"])
    # one trial stopped by ASHA, one killed after an epoch, one never started
    grid = _Grid([_Result(tmp_path / "trial_0", 0.0, [10.0, 12.0], done=True),
                  _Result(tmp_path / "trial_1", 0.5, [15.0], done=False),
                  _Result(tmp_path / "trial_2", 1.0, [], done=False)], terminated=1, errors=0)
    summary = summarize(conf, grid, location(tmp_path))
    assert summary["finished"] is False and summary["best"] is None
    assert [(r["trial"], r["dev_f1"], r["status"]) for r in summary["trials"]] == [
        ("trial_1", 15.0, "unfinished"), ("trial_0", 12.0, "stopped early"), ("trial_2", None, "unfinished")]
    assert not (tmp_path / "best.yaml").exists()
    assert json.loads((tmp_path / "sweep.json").read_text())["finished"] is False
    assert "unfinished" in (tmp_path / "results.md").read_text()


def test_a_sweep_whose_trials_all_failed_names_no_best(tmp_path):
    from kddocre_ray.storage import location
    from kddocre_ray.sweep import summarize

    conf = load_config(REPO / "configs" / "tiny.yaml", [f"output_dir={tmp_path}"])
    failed = [_Result(tmp_path / f"trial_{i}", g, [], done=False) for i, g in enumerate((0.0, 0.5))]
    for r in failed:
        r.error = RuntimeError("worker died")
    grid = _Grid(failed, terminated=0, errors=2)
    summary = summarize(conf, grid, location(tmp_path))
    assert summary["finished"] is True and summary["best"] is None
    assert [r["status"] for r in summary["trials"]] == ["error", "error"]
    assert not (tmp_path / "best.yaml").exists()
