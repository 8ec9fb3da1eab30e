"""MLflow tracking (kddocre_ray/tracking.py): what a run logs, that a store which is down or dies
never stops training, and that `kddocre track` logs a finished run folder afterwards. The
pipeline's parent and nested runs are checked in test_pipeline.py, a resumed run's continuity
in test_train_ray.py."""
import json

import pytest
from mlflow import MlflowClient

from conftest import REPO, TINY, free_port
from kddocre_ray.cli import main
from kddocre_ray.config import load_config, to_yaml
from kddocre_ray.tracking import EpochMetrics, Tracker


def finished_folder(path, conf) -> dict:
    """A run folder as `kddocre train` leaves it, with hand-written metrics."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(conf))
    metrics = {
        "name": path.name, "precision": "fp32", "device": "cpu", "workers": 1, "train_time_s": 12.5,
        "history": [{"epoch": 1, "step": 4, "train_loss": 1.5, "dev_f1": 10.0, "epoch_time_s": 6.0, "score": 10.0},
                    {"epoch": 2, "step": 8, "train_loss": 0.5, "dev_f1": 30.0, "epoch_time_s": 6.5, "score": 30.0}],
        "dev": {"f1": 30.0, "ign_f1": 29.0, "docs": 6},
        "test": {"f1": 25.0, "ign_f1": 24.5, "docs": 6, "errors": {"C": 3, "W": 1}},
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def history(client, run_id, key) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_track_logs_a_finished_run_folder_once(tmp_path, mlflow_store, capsys):
    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, "name=done", "tracking.experiment=track-test"])
    folder = tmp_path / "done"
    finished_folder(folder, conf)
    main(["track", str(folder)])
    state = json.loads((folder / "tracking.json").read_text())
    assert state["complete"] and state["uri"] == mlflow_store and state["parent"] is None
    [run_id] = state["runs"].values()
    client = MlflowClient(mlflow_store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "done"
    params = run.data.params
    assert params["model.encoder"] == "tiny-random" and params["train.epochs"] == str(conf.train.epochs)
    assert params["data.dev.end"] == "6" and params["run.precision"] == "fp32" and "extends" not in params
    # per-epoch metrics at step = epoch; the kept checkpoint's scores under their own names
    assert history(client, run_id, "train_loss") == [(1, 1.5), (2, 0.5)]
    assert history(client, run_id, "dev_f1") == [(1, 10.0), (2, 30.0)]
    assert "score" not in run.data.metrics and "epoch" not in run.data.metrics
    m = run.data.metrics
    assert (m["best_dev_f1"], m["test_f1"], m["test_ign_f1"], m["test_errors.C"]) == (30.0, 25.0, 24.5, 3.0)
    assert m["train_time_s"] == 12.5
    tags = run.data.tags
    assert tags["kddocre.logged_afterwards"] == "true" and "mlflow.source.git.commit" not in tags
    assert tags["kddocre.run_folder"] == str(folder.resolve())
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", "metrics.json"}

    capsys.readouterr()
    main(["track", str(folder)])  # already complete in this store: nothing new
    assert "already tracked" in capsys.readouterr().out
    exp = client.get_experiment_by_name("track-test")
    assert len(client.search_runs([exp.experiment_id])) == 1


@pytest.fixture
def fail_fast(monkeypatch):
    """No retries and a short timeout: the client's default retries for minutes."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


def test_a_store_that_is_down_is_reported_once(tmp_path, monkeypatch, fail_fast, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    said = []
    tracker = Tracker("down", said.append)
    assert not tracker.ok
    tracker.log(tracker.create_run("r", {}), metrics={"x": 1.0})  # stands down, raises nothing
    assert len(said) == 1 and "training goes on" in said[0] and "kddocre track RUN_DIR" in said[0]
    conf = load_config(REPO / "configs" / "tiny.yaml", TINY)
    finished_folder(tmp_path / "r", conf)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["track", str(tmp_path / "r")])
    assert e.value.code == 1  # a failure at run time, not bad input
    assert "cannot be reached; nothing was logged" in capsys.readouterr().err


def test_a_server_that_dies_mid_run_is_reported_once(mlflow_server, fail_fast):
    said = []
    tracker = Tracker("dies", said.append, uri=mlflow_server.uri)
    run_id = tracker.create_run("r", {})
    tracker.log(run_id, metrics={"x": 1.0}, step=1)
    assert tracker.ok and said and "experiment dies" in said[0]
    callback = EpochMetrics(mlflow_server.uri, run_id)
    callback.after_report(None, [{"epoch": 1, "train_loss": 2.0, "score": 1.0}], None)
    assert callback.ok
    assert [m["value"] for m in mlflow_server.get("metrics/get-history", run_id=run_id, metric_key="train_loss")
            ["metrics"]] == [2.0]
    mlflow_server.stop()
    tracker.log(run_id, metrics={"x": 2.0}, step=2)
    tracker.log(run_id, metrics={"x": 3.0}, step=3)
    tracker.end(run_id)
    assert not tracker.ok and len(said) == 2 and "failed" in said[1]
    callback.after_report(None, [{"epoch": 2, "train_loss": 1.0}], None)  # in Ray's controller: must not raise
    assert not callback.ok


def test_training_with_the_store_down_finishes_and_is_tracked_afterwards(tmp_path, monkeypatch, fail_fast, capfd,
                                                                         mlflow_store):
    """`kddocre train` against a store that is down: the run folder is complete and the output
    says what happened; `kddocre track` then puts the run, with its per-epoch history, into a store."""
    args = [*TINY, "data.train.end=8", "data.dev.end=4", "data.test.end=4", "train.epochs=2",
            "train.precision=fp32", f"output_dir={tmp_path}", "name=offline", "tracking.experiment=offline",
            "tracking.log_model=true"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    import ray

    try:
        main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), *args])
    finally:
        ray.shutdown()
    out = capfd.readouterr()
    assert (out.out + out.err).count("MLflow tracking at http://127.0.0.1") == 1
    folder = tmp_path / "offline"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert not (folder / "tracking.json").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    main(["track", str(folder)])
    [run_id] = json.loads((folder / "tracking.json").read_text())["runs"].values()
    client = MlflowClient(mlflow_store)
    run = client.get_run(run_id)
    assert run.data.metrics["test_f1"] == pytest.approx(metrics["test"]["f1"])
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2]
    assert history(client, run_id, "lr_encoder")[0][1] > 0
    assert run.data.params["run.workers"] == "1"
    # the run's model, logged on its run and registered under the run's name (a plain training run)
    [version] = client.search_model_versions("name='offline'")
    assert version.run_id == run_id and [a.path for a in client.list_artifacts(run_id, "model")] == [
        "model/MLmodel", "model/artifacts", "model/conda.yaml", "model/mlflow_pyfunc.py", "model/python_env.yaml",
        "model/requirements.txt"]


def test_a_run_id_the_store_does_not_hold_opens_a_fresh_run(tmp_path, mlflow_store):
    """tracking.json names a run of an older store at the same address: a new run is opened and
    tracking stays on (a missing run is not a failure of the store)."""
    from kddocre_ray.tracking import MlflowReporter

    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, "name=stale", "tracking.experiment=stale"])
    folder = tmp_path / "stale"
    folder.mkdir()
    (folder / "tracking.json").write_text(json.dumps({"uri": mlflow_store, "runs": {"train:fp": "0" * 32}}))
    reporter = MlflowReporter(conf, folder, log=lambda msg: None)
    reporter.started("train", "fp", {"a": 1})
    assert reporter.tracker.ok
    run_id = reporter.current["train"]
    assert run_id != "0" * 32
    assert json.loads((folder / "tracking.json").read_text())["runs"] == {"train:fp": run_id}
    assert MlflowClient(mlflow_store).get_run(run_id).data.params == {"a": "1"}


def test_a_submitted_jobs_default_store_is_in_its_output_folder(tmp_path, monkeypatch):
    """Under `ray job submit` the working directory is Ray's temporary copy, deleted after the job:
    without MLFLOW_TRACKING_URI the store goes to the (absolute) output folder instead."""
    from kddocre_ray.tracking import MlflowReporter

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "shared"
    out.mkdir()
    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, f"output_dir={out}"])
    reporter = MlflowReporter(conf, out / conf.name, log=lambda msg: None)
    assert reporter.tracker.ok and reporter.tracker.uri == f"sqlite:///{out / 'mlflow.db'}"


@pytest.mark.parametrize("damage, says", [
    (lambda f: (f / "config.yaml").write_text("a: [\n"), "config.yaml: not a resolved kddocre config"),
    (lambda f: (f / "config.yaml").write_text("- a\n"), "config.yaml: not a resolved kddocre config: expected a mapping"),
    (lambda f: (f / "config.yaml").write_text("bogus: 1\n"), "config.yaml: not a resolved kddocre config: bogus"),
    (lambda f: (f / "config.yaml").write_text("name: x\n"), "config.yaml: not a resolved kddocre config"),
    (lambda f: (f / "metrics.json").write_text("[1]"), "metrics.json: expected a JSON object of scores"),
    (lambda f: (f / "metrics.json").write_text(json.dumps({"history": [{"epoch": "slow"}]})),
     "metrics.json: history[0]: expected an object of numbers with an integer epoch"),
    (lambda f: (f / "pipeline.json").write_text(json.dumps({"stages": []})), 'pipeline.json: expected {"stages"'),
    (lambda f: (f / "pipeline.json").write_text(json.dumps({"stages": {"evaluate": {"status": "running"}}})),
     "pipeline.json: stages.evaluate: expected"),
], ids=["config-not-yaml", "config-a-list", "config-unknown-key", "config-incomplete", "metrics-a-list",
        "history-garbage", "stages-a-list", "stage-unfinished"])
def test_track_refuses_a_damaged_run_folder_naming_the_file(tmp_path, capsys, damage, says):
    """Before any MLflow run is opened: nothing half-logged."""
    conf = load_config(REPO / "configs" / "tiny.yaml", [*TINY, "name=done", "tracking.experiment=track-damaged"])
    folder = tmp_path / "done"
    finished_folder(folder, conf)
    damage(folder)
    with pytest.raises(SystemExit) as e:
        main(["track", str(folder)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and err.count("\n") == 1, err
    assert not (folder / "tracking.json").exists()
