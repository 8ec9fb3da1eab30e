"""Screenshot of the MLflow UI comparing finished runs: the picture in the README.

Logs the given run folders (default: every folder under docs/runs/) into a fresh SQLite store with
`kddocre track`, starts `mlflow server` on a free port of 127.0.0.1 over it, opens the runs'
comparison view in headless Chromium (Debian's `chromium` package, driven by Playwright for Python:
`pip install -e '.[docs]'`, no `playwright install` needed) and saves a PNG.

    python docs/mlflow_screenshot.py [RUN_DIR ...] [--out docs/mlflow_compare.png] \
        [--params distill.kd loss.gamma] [--metrics best_dev_f1 test_f1 test_ign_f1]

Why a driven browser and not `chromium --screenshot URL`: MLflow 3.17's comparison page takes
neither from its URL or a server setting.
- Its parallel coordinates plot starts on the first 3 differing parameters in alphabetical order
  and the first metric (component state, e.g. pipeline.corpus paths against best_dev_precision):
  the script clears them and picks --params and --metrics in the plot's selects. Defaults: the
  parameters whose values differ between the runs (up to 4; not paths, the run's own name or one
  some runs lack) and those of best_dev_f1, test_f1, test_ign_f1 every run has; the last metric
  colours the lines.
- On 127.0.0.1 the MLflow Assistant panel opens itself on the first visit and takes a third of the
  window: the localStorage keys behind it are set before the page loads (panel closed, first-visit
  opening done) and its floating button is hidden.

A sweep's trials are logged by the sweep itself: point at its store and name it instead (the
trials differ in the swept parameter, so the plot shows e.g. loss.gamma against best_dev_f1).

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mlflow_server import serve  # noqa: E402 - the tests' launcher

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METRICS = ["best_dev_f1", "test_f1", "test_ign_f1"]
# MLflow 3.17's localStorage keys (useLocalStorage: KEY_v1) and its design system's class prefix
HIDE_ASSISTANT = """try {
  localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
  localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
} catch (e) {}"""
SELECT = ".du-bois-light-select"


def differing_params(runs: list[dict]) -> list[str]:
    """The parameters a comparison is about: values that differ between the runs. Left out: paths
    and the run's own name (as 10-character axis labels they say nothing) and parameters some runs
    lack (an axis with an "unknown" tick)."""
    params = [{p["key"]: p["value"] for p in r["data"].get("params", [])} for r in runs]
    names = {r["info"].get("run_name") for r in runs}
    return [k for k in sorted(set.intersection(*(set(p) for p in params)))
            if len({p[k] for p in params}) > 1 and not any("/" in p[k] or p[k] in names for p in params)]


def find_chromium() -> str:
    """The system chromium, checked with Playwright before the minutes of logging runs."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise SystemExit("playwright not installed: pip install -e '.[docs]' (or pip install playwright; "
                         "it drives the system chromium, no `playwright install`)") from None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found: apt-get install chromium")
    return chromium


def shoot(chromium: str, url: str, out: str, size: str, params: list[str] | None, metrics: list[str] | None) -> None:
    """Opens `url` in headless Chromium without the Assistant panel; on the compare page, shows
    `params` and `metrics` as the parallel coordinates plot's axes; saves the window as `out`."""
    from playwright.sync_api import sync_playwright

    width, height = (int(v) for v in size.split(","))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(120_000)
            page.add_init_script(HIDE_ASSISTANT)
            # not "networkidle": MLflow's telemetry web worker keeps a request open (no network here);
            # the waits below are for the elements themselves
            page.goto(url, wait_until="load")
            page.add_style_tag(content="[data-assistant-ui] { display: none !important; }")
            if params is not None:
                clear = page.get_by_test_id("clear-button")  # under the plot's two selects
                clear.click()
                selects = clear.locator("xpath=ancestor::div[2]").locator(SELECT)
                for select, keys in zip([selects.nth(0), selects.nth(1)], [params, metrics]):
                    select.click()  # opens its list, which stays open while options are picked
                    for key in keys:
                        page.keyboard.type(key)
                        page.locator(f"{SELECT}-dropdown:visible [title={json.dumps(key)}]").click()
                    page.keyboard.press("Escape")
                page.evaluate("document.activeElement && document.activeElement.blur()")
                page.mouse.move(0, 0)  # no hover highlight left over
                page.wait_for_function("n => document.querySelectorAll('.pcp-plot .axis-title').length === n",
                                       arg=len(params) + len(metrics))
                print("plot axes:", ", ".join(page.locator(".pcp-plot .axis-title").all_text_contents()))
            else:  # the chart view: its metric charts come last
                page.locator(".js-plotly-plot").first.wait_for()
            page.wait_for_timeout(1000)  # plotly's and the tables' last layout pass
            page.screenshot(path=out)
        finally:
            browser.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="finished run folders (default: docs/runs/*)")
    p.add_argument("--out", default=str(REPO / "docs" / "mlflow_compare.png"))
    p.add_argument("--experiment", default="redocred_mini")
    p.add_argument("--size", default="1600,1300", help="browser window, WIDTH,HEIGHT")
    p.add_argument("--view", choices=["compare", "chart"], default="compare",
                   help="compare: the runs' comparison page; chart: the experiment's runs with metric charts")
    p.add_argument("--params", nargs="+", metavar="PARAM",
                   help="the compare plot's parameter axes (default: parameters that differ between the runs, up to 4)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC",
                   help=f"the compare plot's metric axes, the last colours the lines (default: {' '.join(METRICS)})")
    p.add_argument("--store", help="an existing MLflow store to show (e.g. a sweep's sqlite:///mlflow.db) "
                                   "instead of logging run folders into a fresh one")
    p.add_argument("--sweep", help="only the trials of this sweep (runs tagged kddocre.sweep=NAME)")
    args = p.parse_args()
    runs = [] if args.store else ([Path(r) for r in args.runs]
                                  or sorted(d for d in (REPO / "docs" / "runs").iterdir() if d.is_dir()))
    chromium = find_chromium()

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
            chosen = [r for r, t in zip(found, tags) if "mlflow.parentRunId" not in t
                      and (args.sweep is None or t.get("kddocre.sweep") == args.sweep)]
            if not chosen:
                raise SystemExit(f"no runs to compare in {uri} (experiment {args.experiment}, sweep {args.sweep})")
            ids = [r["info"]["run_id"] for r in chosen]
            params = metrics = None
            if args.view == "compare":
                known_params = {p["key"] for r in chosen for p in r["data"].get("params", [])}
                known_metrics = {m["key"] for r in chosen for m in r["data"].get("metrics", [])}
                shared = set.intersection(*({m["key"] for m in r["data"].get("metrics", [])} for r in chosen))
                params = args.params or differing_params(chosen)[:4]
                metrics = args.metrics or [m for m in METRICS if m in shared]
                for kind, keys, known in [("parameter", params, known_params), ("metric", metrics, known_metrics)]:
                    if unknown := [k for k in keys if k not in known]:
                        raise SystemExit(f"no {kind} {', '.join(unknown)} in these runs; "
                                         f"they have: {', '.join(sorted(known))}")
            query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp["experiment_id"]])})
            url = (f"{base}/#/compare-runs?{query}" if args.view == "compare"
                   else f"{base}/#/experiments/{exp['experiment_id']}/runs?compareRunsMode=CHART")
            print(f"comparing {len(ids)} runs: {url}")
            shoot(chromium, url, str(Path(args.out).resolve()), args.size, params, metrics)
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    print(f"screenshot written to {args.out}")


if __name__ == "__main__":
    main()
