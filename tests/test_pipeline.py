"""The distillation pipeline end to end on a local Ray cluster with the tiny random encoder:
every stage runs and commits; a rerun skips them all; a changed KD weight reruns only the student
stages (here under DeepSpeed ZeRO-2 on two workers); a job killed after the soft labels resumes
at the student; `ray job submit` against a head started by the test runs the pipeline (as NA)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, SAMPLE
from kddocre_ray.config import load_config
from test_train_ray import TINY

STAGES = ["teacher", "ingest", "soft_labels", "student", "finetune", "evaluate"]


def pipeline_args(corpus: Path) -> list[str]:
    return [*TINY, "data.train.end=8", "data.dev.end=4", "data.test.end=4", "train.epochs=1",
            "train.precision=fp32", f"distill.corpus={corpus}", "distill.pretrain_epochs=1",
            "distill.inference_batch_size=4", "distill.rows_per_shard=4"]


def statuses(run_dir: Path) -> dict[str, str]:
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    return {name: stages[name]["status"] for name in stages}


def run(args: list[str], out: Path, name: str = "p") -> dict:
    import ray

    from kddocre_ray.pipeline.distill import run_pipeline

    conf = load_config(REPO / "configs" / "tiny.yaml", [*args, f"output_dir={out}", f"name={name}"])
    try:
        return run_pipeline(conf)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One pipeline run on 8 distant documents (20 of them labelled by name matching)."""
    base = tmp_path_factory.mktemp("pipeline")
    corpus = base / "distant.json"
    corpus.write_text(json.dumps(json.loads((SAMPLE / "distant.json").read_text())[:8]))
    args = pipeline_args(corpus)
    metrics = run(args, base / "out")
    return base / "out", args, metrics


def stage_dirs(out: Path) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[0]: p for p in (out / "stages").iterdir() if not p.name.startswith(".")}


def test_every_stage_runs_and_commits_its_manifest(first):
    out, _, metrics = first
    run_dir = out / "p"
    assert statuses(run_dir) == {s: "ran" for s in STAGES}
    dirs = stage_dirs(out)
    assert set(dirs) == set(STAGES) - {"evaluate"}
    for name, folder in dirs.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["stage"] == name and folder.name == f"{name}-{manifest['fingerprint']}"
    assert not list((out / "stages").glob(".*"))  # no temporary folder left behind
    for name in ("metrics.json", "result.json", "manifest.json", "plots/training.png", "plots/test_breakdown.png"):
        assert (run_dir / name).exists(), name
    assert metrics["test"]["docs"] == 4 and 0 <= metrics["test"]["f1"] <= 100
    assert set(metrics["histories"]) == {"teacher", "student", "finetune"}


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


def test_fine_tuning_starts_from_the_students_weights(first, tmp_path):
    """init_from loads weights only: at learning rate 0 the fine-tuned model keeps the student's
    weights exactly, and its schedule starts at step 0 (a fresh optimizer, not a resume)."""
    import ray

    from kddocre_ray.checkpoint import load_weights
    from kddocre_ray.train.job import run_train

    out, args, _ = first
    student = stage_dirs(out)["student"]
    conf = load_config(REPO / "configs" / "tiny.yaml", [
        *args, f"train.init_from={student}", "train.encoder_lr=0", "train.head_lr=0", f"output_dir={tmp_path}", "name=f"])
    try:
        metrics = run_train(conf)
    finally:
        ray.shutdown()
    assert [h["step"] for h in metrics["history"]] == [2]
    mine, theirs = load_weights(tmp_path / "f"), load_weights(student)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_rerun_skips_every_finished_stage(first):
    out, args, metrics = first
    again = run(args, out)
    assert statuses(out / "p") == {s: "skipped" for s in STAGES}
    assert again["test"] == metrics["test"]


def test_changed_kd_weight_reruns_only_the_student_stages_under_zero2(first):
    """Teacher, ingest and soft labels are reused; the student and fine-tuning run again on two
    DeepSpeed ZeRO-2 workers (4 rows each: one step per epoch)."""
    out, args, _ = first
    zero2 = ["distill.weight=0.5", "distill.student_workers=2", "distill.student_strategy=deepspeed",
             f"distill.student_deepspeed_config={REPO}/configs/deepspeed/zero2.json"]
    metrics = run([*args, *zero2], out, name="w")
    assert statuses(out / "w") == {"teacher": "skipped", "ingest": "skipped", "soft_labels": "skipped",
                                   "student": "ran", "finetune": "ran", "evaluate": "ran"}
    [student] = metrics["histories"]["student"]
    assert student["step"] == 1
    assert student["train_loss"] == pytest.approx(student["train_re_loss"] + 0.5 * student["train_kd_loss"], rel=1e-5)
    workers = {json.loads((r / "metrics.json").read_text())["workers"] for r in (out / "stages").glob("student-*")}
    assert workers == {1, 2}  # the first run's student and this one's


def _copy_stages(src: Path, dst: Path, names: list[str]) -> None:
    for name, folder in stage_dirs(src).items():
        if name in names:
            shutil.copytree(folder, dst / "stages" / folder.name)


def test_job_killed_after_the_soft_labels_resumes_at_the_student(first, tmp_path):
    out, args, _ = first
    _copy_stages(out, tmp_path, ["teacher", "ingest"])  # the job starts at the soft labels
    cmd = [sys.executable, "jobs/distill.py", "--config", "configs/tiny.yaml", *args, "name=k",
           "--output-dir", str(tmp_path)]
    job = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list((tmp_path / "stages").glob("soft_labels-*/manifest.json")) and time.time() < deadline:
            assert job.poll() is None, "the job ended before its soft labels were written"
            time.sleep(0.2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert not (tmp_path / "k" / "metrics.json").exists()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert statuses(tmp_path / "k") == {"teacher": "skipped", "ingest": "skipped", "soft_labels": "skipped",
                                        "student": "ran", "finetune": "ran", "evaluate": "ran"}


# the `ray` command of the Python running the tests (beside it in a venv or pyenv version)
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_the_pipeline_on_a_started_head(first, tmp_path):
    """`ray start --head` in its own process group (stopped by process id, never `ray stop`),
    then `ray job submit --working-dir .` of jobs/distill.py; the job exits 0 and its run
    folder lands in the absolute --output-dir. The job runs NA (distill.kd=none): the student
    pretrains on the ingested rows' distant labels alone, with no teacher."""
    out, args, _ = first
    _copy_stages(out, tmp_path, ["ingest"])
    temp = tempfile.mkdtemp(prefix="krt", dir="/tmp")  # Ray's socket paths must stay short
    dash = _free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={_free_port()}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}", "--include-dashboard=true"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        address = f"http://127.0.0.1:{dash}"
        submit = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
                  sys.executable, "jobs/distill.py", "--config", "configs/tiny.yaml", *args, "distill.kd=none", "name=j",
                  "--output-dir", str(tmp_path)]
        deadline = time.time() + 120
        while True:  # the dashboard takes a few seconds to accept jobs
            probe = subprocess.run([RAY, "job", "list", "--address", address], capture_output=True, env=env)
            if probe.returncode == 0 or time.time() > deadline:
                break
            time.sleep(1)
        done = subprocess.run(submit, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        assert "succeeded" in done.stdout.lower()
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert statuses(tmp_path / "j") == {"ingest": "skipped", "student": "ran", "finetune": "ran", "evaluate": "ran"}
    metrics = json.loads((tmp_path / "j" / "metrics.json").read_text())
    [student] = metrics["histories"]["student"]
    assert "train_kd_loss" not in student and student["train_loss"] == student["train_re_loss"]
    assert metrics["test"]["docs"] == 4
