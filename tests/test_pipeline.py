"""The distillation pipeline end to end on a local Ray cluster with the tiny random encoder (the
session's `tiny_pipeline`): every stage runs and commits; a rerun skips them all; a changed KD
weight reruns only the student stages (here under DeepSpeed ZeRO-2 on two workers); a job killed
at six points in turn finishes on its reruns; `ray job submit` against a head started by the
test, stopped with `ray job stop` and submitted again, finishes (as NA)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import RAY, REPO, SAMPLE, STAGES, WorkerKiller, kill_when, pipeline_stages
from conftest import run_pipeline_at as run


def statuses(run_dir: Path) -> dict[str, str]:
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    return {name: stages[name]["status"] for name in stages}


@pytest.fixture(scope="module")
def first(tiny_pipeline):
    return tiny_pipeline.out, tiny_pipeline.args, tiny_pipeline.metrics


def stage_runs(client, run_dir: Path) -> tuple:
    """The pipeline's parent run and its nested runs by stage, as recorded in tracking.json."""
    state = json.loads((run_dir / "tracking.json").read_text())
    parent = client.get_run(state["parent"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return state, parent, {r.data.tags["kddocre.stage"]: r for r in children}


def stage_dirs(out: Path, name: str = "p") -> dict[str, Path]:
    """The stage folders of run `name`, but its evaluate stage (the run folder itself)."""
    return {k: v for k, v in pipeline_stages(out / name).items() if k != "evaluate"}


def test_every_stage_runs_and_commits_its_manifest(first):
    out, _, metrics = first
    run_dir = out / "p"
    assert statuses(run_dir) == {s: "ran" for s in STAGES}
    dirs = stage_dirs(out)
    assert set(dirs) == set(STAGES) - {"evaluate"}
    for name, folder in dirs.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["stage"] == name and folder.name == f"{name}-{manifest['fingerprint']}"
        # every output file with the size and digest it was written with
        wanted = ({"checkpoint/model.pt", "checkpoint/checksums.json", "metrics.json"}
                  if name in ("teacher", "student", "finetune") else {"part-00000.parquet"} if name == "ingest" else set())
        assert wanted <= manifest["files"].keys() and manifest["files"], name
        for file, rec in manifest["files"].items():
            assert (folder / file).stat().st_size == rec["size"] and len(rec["sha256"]) == 64
    assert not list((out / "stages").glob(".*"))  # no temporary folder left behind
    for name in ("metrics.json", "result.json", "manifest.json", "plots/training.png", "plots/test_breakdown.png"):
        assert (run_dir / name).exists(), name
    assert metrics["test"]["docs"] == 4 and 0 <= metrics["test"]["f1"] <= 100
    assert set(metrics["histories"]) == {"teacher", "student", "finetune"}


def test_the_pipeline_is_tracked_in_mlflows_default_store(first):
    """A parent run with the pipeline's config, a nested run per stage with its own parameters,
    per-epoch metrics at step = epoch (logged live by the Ray Train callback), final scores and files."""
    from mlflow import MlflowClient

    out, _, metrics = first
    db = out.parent / "mlflow.db"
    assert db.exists()
    client = MlflowClient(f"sqlite:///{db}")
    state, parent, runs = stage_runs(client, out / "p")
    assert state["complete"] and state["uri"] == f"sqlite:///{db}"
    assert client.get_experiment(parent.info.experiment_id).name == "tiny"
    assert parent.info.status == "FINISHED" and parent.data.tags["kddocre.kind"] == "pipeline"
    assert parent.data.params["distill.kd"] == "mse" and parent.data.params["pipeline.pretrain_epochs"] == "1"
    assert parent.data.metrics["test_f1"] == pytest.approx(metrics["test"]["f1"])
    assert {"config.yaml", "pipeline.json", "metrics.json", "result.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    assert sorted(runs) == sorted(STAGES) and all(r.info.status == "FINISHED" for r in runs.values())
    for name, epochs in (("teacher", [1, 2]), ("student", [1]), ("finetune", [1])):
        run = runs[name]
        assert run.data.params["run.precision"] == "fp32" and run.data.params["run.workers"] == "1"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == epochs
        assert run.data.tags["kddocre.checkpoint"].endswith("checkpoint")
        assert run.data.tags["mlflow.source.git.commit"]
    for name in ("teacher", "finetune"):  # epochs were logged as they ended, by the controller, before scoring
        rid = runs[name].info.run_id
        epochs = client.get_metric_history(rid, "train_loss")
        [final] = client.get_metric_history(rid, "test_f1")
        assert max(e.timestamp for e in epochs) < final.timestamp
    assert runs["teacher"].data.params["distill.kd"] == "mse" and runs["teacher"].data.params["distill.weight"] == "1.0"
    assert "train_kd_loss" in runs["student"].data.metrics and "train_kd_loss" not in runs["teacher"].data.metrics
    assert runs["student"].data.params["train.epochs"] == "1"
    soft = runs["soft_labels"].data.metrics
    assert soft["documents"] == 8 and soft["pairs"] > 0 and soft["bytes_per_document"] > 0 and soft["documents_per_s"] > 0
    assert runs["finetune"].data.metrics["test_f1"] == pytest.approx(metrics["test"]["f1"])
    assert {"plots/training.png", "plots/test_breakdown.png"} <= {
        a.path for a in client.list_artifacts(runs["evaluate"].info.run_id, "plots")}


def test_track_logs_a_finished_pipeline_into_another_store(first, tmp_path):
    """`kddocre track` replays the run folder: the same parent and nested runs, per-epoch history included."""
    from mlflow import MlflowClient

    from kddocre_ray.cli import main

    out, _, metrics = first
    copy = tmp_path / "p"
    shutil.copytree(out / "p", copy)
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        main(["track", str(copy)])
    client = MlflowClient(uri)
    state, parent, runs = stage_runs(client, copy)
    assert state["complete"] and parent.data.tags["kddocre.logged_afterwards"] == "true"
    assert sorted(runs) == sorted(STAGES)
    assert parent.data.metrics["test_ign_f1"] == pytest.approx(metrics["test"]["ign_f1"])
    assert [m.step for m in client.get_metric_history(runs["finetune"].info.run_id, "dev_f1")] == [1]
    assert runs["student"].data.params["distill.kd"] == "mse"


def test_the_run_folder_stands_for_the_fine_tuned_model(first, tmp_path):
    """`kddocre predict --checkpoint RUN` on a pipeline's run folder uses its fine-tuned model and
    reproduces the pipeline's result.json on the same test documents."""
    from kddocre_ray.cli import main

    out, _, _ = first
    test4 = tmp_path / "test4.json"
    test4.write_text(json.dumps(json.loads((SAMPLE / "test.json").read_text())[:4]))
    main(["predict", "--checkpoint", str(out / "p"), "--data", str(test4), "--out", str(tmp_path / "pred.json")])
    assert json.loads((tmp_path / "pred.json").read_text()) == json.loads((out / "p" / "result.json").read_text())


def test_student_pretrains_on_streamed_rows_with_both_loss_parts(first):
    out, _, metrics = first
    [student] = metrics["histories"]["student"]
    assert student["step"] == 2  # 8 rows, batch 4, one worker
    assert student["train_kd_loss"] > 0 and student["train_re_loss"] > 0
    assert student["train_loss"] == pytest.approx(student["train_re_loss"] + 1.0 * student["train_kd_loss"], rel=1e-5)
    counts = json.loads((stage_dirs(out)["ingest"] / "manifest.json").read_text())["counts"]
    assert counts["rows"] == 8 and counts["shards"] == 2
    soft = json.loads((stage_dirs(out)["soft_labels"] / "manifest.json").read_text())["counts"]
    assert soft["documents"] == 8 and soft["pairs"] > 0


def test_rerun_skips_every_finished_stage(first, monkeypatch):
    """... and continues the same MLflow runs: no new run, each stage tagged as skipped this time;
    it starts or joins no Ray cluster (nothing is left to run), and lists each stage's files once
    (on remote storage every listed file is a request)."""
    from mlflow import MlflowClient

    from kddocre_ray.pipeline import stages as stages_module

    monkeypatch.setattr("kddocre_ray.pipeline.run.init_ray", lambda *a, **k: pytest.fail("a finished pipeline used Ray"))
    listed = []
    check_files = stages_module.check_files
    monkeypatch.setattr(stages_module, "check_files", lambda folder, files: listed.append(folder) or check_files(folder, files))
    out, args, metrics = first
    client = MlflowClient(f"sqlite:///{out.parent / 'mlflow.db'}")
    before = json.loads((out / "p" / "tracking.json").read_text())
    again = run(args, out, default_store_in=out.parent)
    assert statuses(out / "p") == {s: "skipped" for s in STAGES}
    assert again["test"] == metrics["test"]
    assert sorted(map(str, listed)) == sorted(map(str, {**stage_dirs(out), "evaluate": out / "p"}.values()))
    state, parent, runs = stage_runs(client, out / "p")
    assert state["parent"] == before["parent"] and state["runs"] == before["runs"]
    assert parent.info.status == "FINISHED"
    assert all(r.data.tags["kddocre.last_invocation"] == "skipped" for r in runs.values())
    assert len(client.search_runs([parent.info.experiment_id])) == 1 + len(STAGES)


def test_changed_kd_weight_reruns_only_the_student_stages_under_zero2(first, mlflow_server, ray_head):
    """Teacher, ingest and soft labels are reused; the student (here 2 epochs) and fine-tuning run
    again on two DeepSpeed ZeRO-2 workers (4 rows each: one step per epoch). Tracked through an
    MLflow server (read back through its REST API): the reused stages show as skipped, naming
    their folders. One student worker is SIGKILLed after the student's first checkpoint: Ray Train
    restarts the worker group (scale.max_failures), which resumes from that DeepSpeed checkpoint
    (optimizer included) and finishes in the same run, each epoch once. Its weights are not
    compared bit for bit with a run resumed by hand: the student streams its rows, and which rows
    reach which worker in which order is Ray Data's to decide (`kddocre train`, which holds its
    split, is compared bit for bit in test_train_ray)."""
    out, args, _ = first
    zero2 = ["distill.weight=0.5", "pipeline.student_workers=2", "pipeline.student_strategy=deepspeed",
             f"pipeline.student_deepspeed_config={REPO}/configs/deepspeed/zero2.json", "pipeline.pretrain_epochs=2"]
    first_student = stage_dirs(out)["student"]

    def student_checkpointed() -> bool:
        return any(f.parents[1] != first_student and not (f.parents[1] / "manifest.json").exists()
                   for f in (out / "stages").glob("student-*/ray/checkpoint_manager_snapshot.json"))

    with pytest.MonkeyPatch.context() as mp, \
            WorkerKiller(ray_head.dashboard, student_checkpointed, workers=2) as killer:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
        metrics = run([*args, *zero2], out, name="w")
    assert killer.killed, "no student worker was killed"
    tracked = {r["info"]["run_id"]: r for r in mlflow_server.runs("tiny")}
    tags = {rid: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for rid, r in tracked.items()}
    [parent] = [rid for rid, t in tags.items() if t.get("kddocre.kind") == "pipeline"]
    stages = {t["kddocre.stage"]: rid for rid, t in tags.items() if t.get("mlflow.parentRunId") == parent}
    assert sorted(stages) == sorted(STAGES)
    for name in ("teacher", "ingest", "soft_labels"):
        assert tags[stages[name]]["kddocre.status"] == "skipped"
        assert tags[stages[name]]["kddocre.stage_folder"] == str(stage_dirs(out)[name].resolve())
    student = {p["key"]: p["value"] for p in tracked[stages["student"]]["data"]["params"]}
    assert student["distill.weight"] == "0.5" and student["train.strategy"] == "deepspeed"
    assert student["run.workers"] == "2"
    history = mlflow_server.get("metrics/get-history", run_id=stages["student"], metric_key="train_kd_loss")["metrics"]
    assert sorted(m["step"] for m in history) == [1, 2]  # each epoch once, the killed one included
    assert statuses(out / "w") == {"teacher": "skipped", "ingest": "skipped", "soft_labels": "skipped",
                                   "student": "ran", "finetune": "ran", "evaluate": "ran"}
    students = metrics["histories"]["student"]
    assert [h["epoch"] for h in students] == [1, 2] and [h["step"] for h in students] == [1, 2]
    for student in students:
        assert student["train_loss"] == pytest.approx(student["train_re_loss"] + 0.5 * student["train_kd_loss"],
                                                      rel=1e-5)
    workers = [json.loads((stage_dirs(out, name)["student"] / "metrics.json").read_text())["workers"] for name in "pw"]
    assert workers == [1, 2]  # the first run's student and this one's


def _copy_stages(src: Path, dst: Path, names: list[str]) -> None:
    for name, folder in stage_dirs(src).items():
        if name in names:
            shutil.copytree(folder, dst / "stages" / folder.name)


def _any(pattern: str, root: Path):
    return lambda: bool(list(root.glob(pattern)))


def test_a_driver_killed_at_every_point_leaves_a_state_the_rerun_finishes(first, tmp_path):
    """The driver (with its job) SIGKILLed at six points in turn, inside and between stages, each
    rerun of the same command resuming the last: the job finishes with the uninterrupted run's
    outputs in keys and counts, and no half-written stage is ever taken as complete. Before the
    first run the stages folder also holds what a kill between a data stage's last write and its
    manifest leaves: the soft labels' temporary folder, every shard written, no manifest.
    The teacher and the ingested rows are copied from the session's run: the job starts at the
    soft labels."""
    out, args, metrics = first
    _copy_stages(out, tmp_path, ["teacher", "ingest"])
    stages = tmp_path / "stages"
    done_soft = stage_dirs(out)["soft_labels"]
    half = stages / f".{done_soft.name}.tmp"  # the same fingerprint: this job's soft labels
    shutil.copytree(done_soft, half)
    (half / "manifest.json").unlink()
    cmd = [sys.executable, "jobs/distill.py", "--config", "configs/tiny.yaml", *args, "name=k",
           "--output-dir", str(tmp_path)]
    planted = [half / f.name for f in half.glob("*.parquet")]
    points = [  # (what the kill waits for, where that is)
        # the job has emptied the planted folder and builds the soft labels in it afresh
        (lambda: half.is_dir() and not any(f.exists() for f in planted), "inside the soft labels"),
        (_any("soft_labels-*/manifest.json", stages), "after the soft labels"),
        (_any("student-*/ray", stages), "inside the student"),
        (_any("student-*/manifest.json", stages), "after the student"),
        (_any("finetune-*/ray", stages), "inside fine-tuning"),
        (_any("finetune-*/manifest.json", stages), "after fine-tuning"),
    ]
    for ready, where in points:
        kill_when(cmd, ready, where)
        assert not (tmp_path / "k" / "metrics.json").exists(), where
        for folder in stages.glob("*-*"):  # a stage folder that counts as done is whole
            if (folder / "manifest.json").exists():
                recorded = json.loads((folder / "manifest.json").read_text())["files"]
                assert all((folder / f).stat().st_size == r["size"] for f, r in recorded.items()), (where, folder)
    # A finished stage whose file has lost bytes since (here a shard of the ingested rows) is not
    # reused as it is: the rerun's size check finds it, says so and builds that stage again.
    [shard] = stages.glob("ingest-*/part-00000.parquet")
    rows = pq.read_table(shard)
    shard.write_bytes(shard.read_bytes()[:100])
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage ingest" in done.stdout and "part-00000.parquet: 100 bytes" in done.stdout and "rebuilding it" in done.stdout
    assert_quiet(done.stdout + done.stderr)
    assert pq.read_table(shard).equals(rows)
    assert statuses(tmp_path / "k")["evaluate"] == "ran"
    assert not list(stages.glob(".*"))  # no temporary folder left
    # the uninterrupted run's outputs, in keys and counts
    mine, theirs = stage_dirs(tmp_path, "k"), stage_dirs(out)
    assert {k: v.name for k, v in mine.items()} == {k: v.name for k, v in theirs.items()}  # the same fingerprints
    for name in ("ingest", "soft_labels"):  # every row once, as in the uninterrupted run
        keys = [sorted(zip(*pa.concat_tables(pq.read_table(f, columns=["corpus", "doc_index"])
                                             for f in d[name].glob("*.parquet")).to_pydict().values()))
                for d in (mine, theirs)]
        assert keys[0] == keys[1] and len(set(keys[0])) == len(keys[0]), name
    again = json.loads((tmp_path / "k" / "metrics.json").read_text())
    assert again.keys() == metrics.keys() and again["test"].keys() == metrics["test"].keys()
    assert {k: [h["epoch"] for h in v] for k, v in again["histories"].items()} == \
        {k: [h["epoch"] for h in v] for k, v in metrics["histories"].items()}


# What Ray prints unless --verbose: Ray Data's progress (bars and per-operator lines) and plans, Ray
# Train's worker-group and checkpoint lines.
RAY_CHATTER = ("logging_progress", "Running Dataset", "Starting execution of Dataset", "Execution plan of Dataset",
               "Checkpoint successfully created", "Reporting training result", "Moving model to device",
               "Started training worker group", "Started a local Ray instance")


def assert_quiet(log: str) -> None:
    """A pipeline's default log: its own lines (stages, epochs, where results are), not Ray's chatter."""
    assert "[kddocre] stage " in log, log[-2000:]
    found = [line for line in log.splitlines() if any(c in line for c in RAY_CHATTER)]
    assert not found, "in the default log:\n" + "\n".join(found[:10])


def test_verify_reads_every_stage_of_a_pipeline_and_names_an_edited_file(first, tmp_path, capsys):
    """`kddocre verify RUN` checks each stage the run used against its manifest's sizes and sha256
    digests; an edit that keeps a file's size (which the cheap reuse check cannot see) is named."""
    from kddocre_ray.cli import main

    out, _, _ = first
    main(["verify", str(out / "p")])
    said = capsys.readouterr().out
    for folder in [*stage_dirs(out).values(), out / "p"]:
        assert f"{folder}: " in said and "files match" in said
    copy = tmp_path / stage_dirs(out)["soft_labels"].name
    shutil.copytree(stage_dirs(out)["soft_labels"], copy)
    [shard] = sorted(copy.glob("*.parquet"))[:1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(copy)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"{shard.name}: its sha256 differs" in err and str(copy) in err


def _submit(ray_head, args: list[str], env: dict) -> subprocess.CompletedProcess:
    """`ray job submit ARGS` to the session's head. The dashboard answers before its job agent is
    up ("No available agent to submit job"), the later the busier the machine: a refused
    submission started nothing, so it is tried again."""
    deadline = time.time() + 180
    while True:
        done = subprocess.run([RAY, "job", "submit", "--address", ray_head.dashboard, *args],
                              capture_output=True, text=True, timeout=600, env=env)
        refused = "No available agent" in done.stdout + done.stderr or "Connection refused" in done.stderr
        if done.returncode == 0 or not refused or time.time() > deadline:
            return done
        time.sleep(2)


def test_ray_job_stop_ends_the_job_and_the_same_submission_resumes(first, tmp_path, ray_head):
    """`ray job submit --working-dir .` of jobs/distill.py to the session's head (`ray start
    --head`, conftest.ray_head), stopped with `ray job stop` inside the student stage: the driver
    takes the SIGTERM as Ctrl-C, Ray Train aborts the run, and within a minute the job is STOPPED
    with no actor or placement group of its own alive (Ray Train's cluster-wide state actor,
    detached by Ray's design, aside; a driver SIGKILLed instead leaves Ray Train's placement
    group cleaner actor alive for good, Ray's bug, hence the head's 30-s grace); the same submission afterwards
    resumes (the ingested rows reused, the student run again; the stopped job's MLflow runs were
    marked KILLED, never left RUNNING), exits 0 and lands its run folder
    in the absolute --output-dir. The job runs NA (distill.kd=none): the student pretrains on the
    ingested rows' distant labels alone, with no teacher; its fine-tuning runs at learning rate 0
    to show that `init_from` loads the student's weights and nothing else."""
    from mlflow import MlflowClient
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_placement_groups

    from kddocre_ray.checkpoint import load_weights

    out, args, _ = first
    _copy_stages(out, tmp_path, ["ingest"])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    job = ["--working-dir", str(REPO), "--", sys.executable, "jobs/distill.py", "--config", "configs/tiny.yaml",
           *args, "distill.kd=none", "pipeline.finetune_encoder_lr=0", "pipeline.finetune_head_lr=0", "name=j",
           "--output-dir", str(tmp_path)]
    done = _submit(ray_head, ["--no-wait", "--submission-id", "stopped", *job], env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    client = JobSubmissionClient(ray_head.dashboard)
    deadline = time.time() + 300
    def training() -> bool:  # Ray Train's workers are up: its Ctrl-C handler is in place (a stop during its
        return bool(list_actors(address=ray_head.dashboard,  # setup still leaves the cleaner behind: see the note)
                                filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]))

    while not (list((tmp_path / "stages").glob("student-*/ray")) and training()):  # inside the student's run
        assert client.get_job_status("stopped") in (JobStatus.PENDING, JobStatus.RUNNING), client.get_job_logs("stopped")[-3000:]
        assert time.time() < deadline, "the student stage never began"
        time.sleep(0.5)
    stopped_at = time.time()
    stop = subprocess.run([RAY, "job", "stop", "--address", ray_head.dashboard, "stopped"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    while client.get_job_status("stopped") != JobStatus.STOPPED:
        assert time.time() - stopped_at < 60, client.get_job_status("stopped")
        time.sleep(0.5)
    job_id = client.get_job_info("stopped").job_id
    while True:  # the job's actors and placement groups go with it, within the same minute
        actors = [a.class_name for a in list_actors(address=ray_head.dashboard, filters=[("job_id", "=", job_id)])
                  if a.state != "DEAD" and a.class_name != "TrainStateActor"]
        groups = [g.placement_group_id for g in list_placement_groups(
            address=ray_head.dashboard, filters=[("creator_job_id", "=", job_id)]) if g.state != "REMOVED"]
        if not actors and not groups:
            break
        assert time.time() - stopped_at < 60, f"still alive a minute after the stop: {actors} {groups}"
        time.sleep(1)
    assert not (tmp_path / "j" / "metrics.json").exists()
    tracked = json.loads((tmp_path / "j" / "tracking.json").read_text())
    stopped_runs = [MlflowClient(tracked["uri"]).get_run(r).info.status for r in [tracked["parent"], *tracked["runs"].values()]]
    assert "RUNNING" not in stopped_runs and "KILLED" in stopped_runs, stopped_runs
    done = _submit(ray_head, job, env)  # the same submission, again
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "succeeded" in done.stdout.lower()
    assert_quiet(done.stdout + done.stderr)  # Ray Train and Ray Data's streaming into it, quiet
    assert statuses(tmp_path / "j") == {"ingest": "skipped", "student": "ran", "finetune": "ran", "evaluate": "ran"}
    metrics = json.loads((tmp_path / "j" / "metrics.json").read_text())
    [student] = metrics["histories"]["student"]  # its one epoch, once
    assert "train_kd_loss" not in student and student["train_loss"] == student["train_re_loss"]
    assert metrics["test"]["docs"] == 4
    # fine-tuning (at learning rate 0 here) loads the student's weights only: they are kept exactly,
    # and its schedule starts at step 0 (a fresh optimizer, not a resume of the student's 2 steps)
    folders = pipeline_stages(tmp_path / "j")
    assert [h["step"] for h in metrics["histories"]["finetune"]] == [2]
    mine, theirs = load_weights(folders["finetune"]), load_weights(folders["student"])
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
