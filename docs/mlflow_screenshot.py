"""Screenshot of the MLflow UI comparing finished runs: the picture in the README.

Logs the given run folders (default: every folder under docs/runs/) into a fresh SQLite store with
`kddocre track`, starts `mlflow server` on a free port of 127.0.0.1 over it, opens the runs'
comparison view in headless Chromium (Debian's `chromium` package) and saves a PNG.

    python docs/mlflow_screenshot.py [RUN_DIR ...] [--out docs/mlflow_compare.png]

A sweep's trials are logged by the sweep itself: point at its store and name it instead.

    python docs/mlflow_screenshot.py --store sqlite:///mlflow.db --experiment redocred_mini \
        --sweep redocred_mini_sweep_gamma --out docs/mlflow_sweep_gamma.png
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import requests

from kddocre_ray.tracking import serve

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="finished run folders (default: docs/runs/*)")
    p.add_argument("--out", default=str(REPO / "docs" / "mlflow_compare.png"))
    p.add_argument("--experiment", default="redocred_mini")
    p.add_argument("--size", default="1600,1300", help="browser window, WIDTH,HEIGHT")
    p.add_argument("--view", choices=["compare", "chart"], default="compare",
                   help="compare: the runs' comparison page; chart: the experiment's runs with metric charts")
    p.add_argument("--store", help="an existing MLflow store to show (e.g. a sweep's sqlite:///mlflow.db) "
                                   "instead of logging run folders into a fresh one")
    p.add_argument("--sweep", help="only the trials of this sweep (runs tagged kddocre.sweep=NAME)")
    args = p.parse_args()
    runs = [] if args.store else ([Path(r) for r in args.runs]
                                  or sorted(d for d in (REPO / "docs" / "runs").iterdir() if d.is_dir()))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found: apt-get install chromium")

    with tempfile.TemporaryDirectory() as tmp:
        uri = args.store or f"sqlite:///{tmp}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        for run in runs:  # copies: tracking.json is written into the folder
            copy = Path(tmp) / "runs" / run.name
            shutil.copytree(run, copy)
            (copy / "tracking.json").unlink(missing_ok=True)
            subprocess.run([str(BIN / "kddocre"), "track", str(copy), "--experiment", args.experiment],
                           env=env, check=True)
        server, base = serve(uri, Path(tmp) / "art")
        try:
            exp = requests.get(f"{base}/api/2.0/mlflow/experiments/get-by-name",
                               params={"experiment_name": args.experiment}, timeout=30).json()["experiment"]
            found = requests.post(f"{base}/api/2.0/mlflow/runs/search",
                                  json={"experiment_ids": [exp["experiment_id"]]}, timeout=30).json()["runs"]
            # top-level runs only: a pipeline's parent stands for its stages
            tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found]
            ids = [r["info"]["run_id"] for r, t in zip(found, tags) if "mlflow.parentRunId" not in t
                   and (args.sweep is None or t.get("kddocre.sweep") == args.sweep)]
            if not ids:
                raise SystemExit(f"no runs to compare in {uri} (experiment {args.experiment}, sweep {args.sweep})")
            query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp["experiment_id"]])})
            url = (f"{base}/#/compare-runs?{query}" if args.view == "compare"
                   else f"{base}/#/experiments/{exp['experiment_id']}/runs?compareRunsMode=CHART")
            print(f"comparing {len(ids)} runs: {url}")
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={args.size}", "--virtual-time-budget=20000",
                            f"--screenshot={Path(args.out).resolve()}", url],
                           check=True, capture_output=True, timeout=180)
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    print(f"screenshot written to {args.out}")


if __name__ == "__main__":
    main()
