"""A real `mlflow server` for the tests and docs/mlflow_screenshot.py: on a free port of 127.0.0.1,
in its own process group, over its own store."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def serve(backend_uri: str, artifacts: Path, port: int = 0, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """`mlflow server --workers 1` on 127.0.0.1 (a free port unless `port`), in its own process
    group (stop it with os.killpg); returns the process and its URI once /health answers."""
    import requests

    port = port or free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri, deadline = f"http://127.0.0.1:{port}", time.time() + timeout
    while True:
        try:
            requests.get(f"{uri}/health", timeout=2).raise_for_status()
            return proc, uri
        except requests.RequestException:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"mlflow server on {uri} did not start") from None
            time.sleep(0.5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server --workers 1` on a free port of 127.0.0.1, over its own SQLite store; its
    REST API is how tests read back what was logged."""

    def __init__(self, folder: Path):
        self.proc, self.uri = serve(f"sqlite:///{folder / 'server.db'}", folder / "art")

    def get(self, path: str, **params) -> dict:
        import requests

        r = requests.get(f"{self.uri}/api/2.0/mlflow/{path}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def runs(self, experiment: str) -> list[dict]:
        import requests

        exp = self.get("experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
        r = requests.post(f"{self.uri}/api/2.0/mlflow/runs/search", json={"experiment_ids": [exp], "max_results": 1000},
                          timeout=30)
        r.raise_for_status()
        return r.json().get("runs", [])

    def stop(self) -> None:
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
