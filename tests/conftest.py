"""Shared fixtures: the shipped sample, the shared benchmark data (when present), tiny encoder,
and a temporary MLflow store for the whole session (nothing writes ./mlflow.db)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlflow_server import MlflowServer, free_port  # noqa: F401 - the tests import them from here

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "kddocre_ray" / "sample"
SHARED = REPO.parent / "shared" / "data"


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
