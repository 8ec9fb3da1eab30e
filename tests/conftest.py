"""Shared fixtures: the shipped sample, the shared benchmark data (when present), tiny encoder, a
temporary MLflow store for the whole session (nothing writes ./mlflow.db), and one tiny pipeline
run that every test reading a pipeline, a teacher or its soft labels shares."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_server import MlflowServer, free_port  # noqa: F401 - the tests import them from here

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "kddocre_ray" / "sample"
SHARED = REPO.parent / "shared" / "data"

# Ray Train's controller polls its workers every 2 s and starts a preemption watcher actor (a
# process) for spot instances: on a 2-core machine that is a few seconds of every training run.
# Every Ray cluster the tests start, locally or in a subprocess, inherits these.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Ray's token authentication, with a token of the session's own (no ~/.ray/auth_token written):
# drivers that join the session's cluster by address must be told the mode. Ray reads the mode
# once per process, when it is first imported, so it is set here, before any test imports Ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

# The tiny random encoder on small slices of the shipped sample: what most Ray tests train.
TINY = [
    "model.encoder=tiny-random", "model.max_length=128", "model.chunk_overlap=32",
    "data.train.end=16", "data.dev.end=6", "data.test.end=6", "train.head_lr=1e-3", "train.encoder_lr=1e-3",
    # the final model into MLflow: where a test asks for it (the tiny pipeline, a tracked `kddocre train`)
    "tracking.log_model=false",
]
STAGES = ["teacher", "ingest", "soft_labels", "student", "finetune", "evaluate"]


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory) -> str:
    """Every run the tests start logs here; subprocesses and Ray jobs inherit the variable."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


# the `ray` command of the Python running the tests (beside it in a venv or pyenv version)
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


_SESSION_HEAD: int | None = None  # the pid of `ray start --head` (ray_head), whose processes tests may reap


@dataclass
class RayHead:
    address: str  # the GCS address drivers join (RAY_ADDRESS)
    dashboard: str  # http://127.0.0.1:PORT, where `ray job submit` goes


@pytest.fixture(scope="session", autouse=True)
def ray_head(mlflow_store) -> RayHead:
    """One Ray cluster for the whole session: `ray start --head` (2 CPUs, a dashboard with its job
    agent, every port our own) in its own process group, stopped by process id at the end (never
    `ray stop`, which would stop any other Ray on the machine). RAY_ADDRESS names it, so every
    driver joins it, in the test process or a subprocess, instead of starting a cluster of its own;
    a test that needs a cluster with another environment unsets it (the S3 pipeline). Its Ray
    processes inherit this environment as it is now (the session's MLflow store, the Train
    settings above, the session's Ray token)."""
    mp = pytest.MonkeyPatch()
    temp = tempfile.mkdtemp(prefix="krt", dir="/tmp")  # Ray's socket paths must stay short
    gcs, dash = free_port(), free_port()
    head = subprocess.Popen(
        # the agent's default port (52365) is taken when another Ray cluster runs here, and then the
        # head never accepts a job ("No available agent to submit job")
        [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
         f"--temp-dir={temp}", "--include-dashboard=true"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_JOB_STOP_WAIT_TIME_S": "30"})  # as cluster.yaml's head: `ray job stop`'s grace
    address = f"127.0.0.1:{gcs}"
    global _SESSION_HEAD
    _SESSION_HEAD = head.pid
    try:
        deadline = time.time() + 120
        while True:  # the GCS answers: drivers can join (ray.init retries the rest itself)
            assert head.poll() is None, "ray start --head exited"
            assert time.time() < deadline, "the Ray head did not start within 120 s"
            try:
                socket.create_connection(("127.0.0.1", gcs), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        mp.setenv("RAY_ADDRESS", address)
        yield RayHead(address, f"http://127.0.0.1:{dash}")
    finally:
        import ray

        ray.shutdown()  # a driver still joined to the head would wait 60 s for it, then exit 1
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)
        mp.undo()


@pytest.fixture(scope="session")
def schema():
    from kddocre_ray.data.docred import load_schema

    return load_schema(SAMPLE / "rel_info.json")


@pytest.fixture(scope="session")
def tokenizer():
    from kddocre_ray.model.encoder import load_tokenizer

    return load_tokenizer("tiny-random")


@pytest.fixture(scope="session")
def sample_docs(schema):
    from kddocre_ray.data.docred import read_docs

    return read_docs(SAMPLE / "train.json", schema)[0]


def pipeline_args(corpus: Path) -> list[str]:
    """The tiny pipeline: 8 training documents, a 2-epoch teacher, a 1-epoch student and fine-tuning."""
    return [*TINY, "data.train.end=8", "data.dev.end=4", "data.test.end=4", "train.epochs=2",
            "pipeline.finetune_epochs=1", "train.precision=fp32", f"pipeline.corpus={corpus}",
            "pipeline.pretrain_epochs=1", "soft_labels.batch_size=4", "pipeline.rows_per_shard=4"]


def tiny_corpus(folder: Path) -> Path:
    """The first 8 documents of the shipped distant sample (the same bytes wherever written, so
    the same ingest fingerprint)."""
    corpus = folder / "distant.json"
    corpus.write_text(json.dumps(json.loads((SAMPLE / "distant.json").read_text())[:8]))
    return corpus


def run_pipeline_at(args: list[str], out, name: str = "p", default_store_in: Path | None = None) -> dict:
    """Run the tiny pipeline into `out`; with `default_store_in`, from that folder and without
    MLFLOW_TRACKING_URI, so that MLflow's default store (./mlflow.db) is the one used."""
    import ray

    from kddocre_ray.config import load_config
    from kddocre_ray.pipeline.run import run_pipeline

    conf = load_config(REPO / "configs" / "tiny.yaml", [*args, f"output_dir={out}", f"name={name}"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            if default_store_in:
                mp.delenv("MLFLOW_TRACKING_URI")
                mp.chdir(default_store_in)
            return run_pipeline(conf)
    finally:
        ray.shutdown()


def pipeline_stages(run_dir: Path) -> dict[str, Path]:
    """A pipeline run's stage folders, as its pipeline.json names them (other runs may have added
    stages of their own beside them)."""
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    return {name: Path(entry["folder"]) for name, entry in stages.items()}


@dataclass
class Pipeline:
    out: Path  # output_dir: stages/ and the run folder p/
    args: list[str]  # the config overrides it ran with
    metrics: dict  # its metrics.json
    corpus: Path

    @property
    def run_dir(self) -> Path:
        return self.out / "p"

    def stage(self, name: str) -> Path:
        return pipeline_stages(self.run_dir)[name]


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Pipeline:
    """One run of every stage on 8 distant documents,
    tracked in MLflow's default store: no MLFLOW_TRACKING_URI, so sqlite:///mlflow.db in the
    folder it ran from (`out.parent`). Tests that only read it share it; tests that change a
    setting run beside it in the same output folder and so reuse the stages that setting leaves
    alone (its teacher, rows and soft labels, its student)."""
    base = tmp_path_factory.mktemp("pipeline")
    corpus = tiny_corpus(base)
    args = pipeline_args(corpus)
    metrics = run_pipeline_at([*args, "tracking.log_model=true"], base / "out", default_store_in=base)
    return Pipeline(base / "out", args, metrics, corpus)


def make_doc(title: str = "doc", labels: list | None = None) -> dict:
    """John lives in Paris , France . -- three entities, one sentence."""
    return {
        "title": title,
        "sents": [["John", "lives", "in", "Paris", ",", "France", "."]],
        "vertexSet": [
            [{"name": "John", "pos": [0, 1], "sent_id": 0, "type": "PER"}],
            [{"name": "Paris", "pos": [3, 4], "sent_id": 0, "type": "LOC"}],
            [{"name": "France", "pos": [5, 6], "sent_id": 0, "type": "LOC"}],
        ],
        "labels": labels if labels is not None else [{"h": 1, "t": 2, "r": "P17", "evidence": [0]}],
    }


@pytest.fixture
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    if server.proc.poll() is None:
        server.stop()


def assert_checkpoint_reproduces_its_probe(ckpt: Path) -> None:
    """The checkpoint's reloaded weights give the logits its probe document had in the workers that
    saved it (probe.pt): what was trained is what was kept."""
    import torch

    from kddocre_ray.checkpoint import load_model
    from kddocre_ray.data.features import doc_features

    model, _, schema, tokenizer = load_model(ckpt)
    probe = torch.load(ckpt / "probe.pt", weights_only=True)
    train = json.loads((SAMPLE / "train.json").read_text())
    doc = next(d for d in train if d["title"] == probe["title"])
    with torch.no_grad():
        logits = model([doc_features(doc, tokenizer, schema)])
    torch.testing.assert_close(logits, probe["logits"], rtol=1e-4, atol=1e-5)


def kill_when(cmd: list[str], ready, what: str, timeout: float = 300) -> None:
    """Run `cmd` from the repo root in its own process group and SIGKILL the whole group (the
    driver and its local Ray cluster) as soon as `ready()` holds; fails if it never does."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while not ready():
            assert proc.poll() is None, f"the command ended before {what}"
            assert time.time() < deadline, f"no {what} within {timeout:.0f}s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reap_train_cleaners()


def reap_train_cleaners() -> None:
    """SIGKILL Ray Train's placement-group cleaner actors. A driver killed without grace leaves its
    run's cleaner alive for good (Ray 2.60's bug, see the README), polling the state API every
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: left to pile up on the session's head, they slow every
    later test. Called when no training run is alive, after a driver was killed."""
    import psutil

    if _SESSION_HEAD is None:
        return
    for p in psutil.Process(_SESSION_HEAD).children(recursive=True):  # the session's cluster, no other
        try:
            if (p.cmdline() or [""])[0].startswith("ray::PlacementGroupCleaner"):
                p.kill()
        except psutil.NoSuchProcess:
            pass


class WorkerKiller:
    """In a background thread: once `ready()` holds and `workers` Ray Train workers are alive
    (found through Ray's state API at `dashboard`), SIGKILL one of them, as a preempted node or
    the OOM killer would. `killed` is its pid; `when` what `ready` saw then."""

    def __init__(self, dashboard: str, ready, workers: int = 1, timeout: float = 300):
        import threading

        self.dashboard, self.ready, self.workers, self.timeout = dashboard, ready, workers, timeout
        self.killed: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import signal

        from ray.util.state import list_actors

        deadline = time.time() + self.timeout
        while not self._stop.is_set() and time.time() < deadline:
            if self.ready():
                alive = list_actors(address=self.dashboard, filters=[("class_name", "=", "RayTrainWorker"),
                                                                     ("state", "=", "ALIVE")], detail=True)
                if len(alive) >= self.workers:
                    os.kill(alive[0].pid, signal.SIGKILL)
                    self.killed = alive[0].pid
                    return
            time.sleep(0.2)

    def __enter__(self) -> WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
