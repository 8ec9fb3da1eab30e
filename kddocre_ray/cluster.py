"""Joining or starting the Ray cluster: the one place that calls `ray.init`."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import ray

from .config import Config
from .errors import InputError


def submitted_job() -> bool:
    """True in the driver of a `ray job submit` job (Ray sets this variable there), whose working
    directory is Ray's temporary copy of the uploaded folder."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


# What makes a run's log readable unless scale.verbose (--verbose): Ray Data's console at warnings
# (its progress bars off: `quiet_data`), Python's deprecation warnings from Ray's own modules off.
# A variable the user set is left as set.
QUIET_ENV = {
    "RAY_DATA_LOGGING_CONFIG": str(Path(__file__).parent / "ray_data_quiet.yaml"),
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar in every worker that loads a model
}


def train_log_level(conf: Config) -> str:
    """Ray Train's log level (RunConfig's LoggingConfig): its worker-group and checkpoint chatter
    only with scale.verbose."""
    return "INFO" if conf.scale.verbose else "WARNING"


def quiet_data(verbose: bool) -> None:
    """Ray Data in this process: progress bars and per-operator progress lines off, its console at
    warnings (the datasets made here carry the setting to the processes that run them)."""
    if verbose:
        return
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # its warning that we turned them off
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.WARNING)


def init_ray(conf: Config, log=print) -> None:
    """Join the cluster named in the config or RAY_ADDRESS, else start a local one."""
    if ray.is_initialized():
        return
    quiet = not conf.scale.verbose
    env = {k: v for k, v in QUIET_ENV.items() if k not in os.environ} if quiet else {}
    if quiet:  # this process too (the evaluate stage loads its model here)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # it read the variable when imported
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    kwargs = {"log_to_driver": True, "logging_level": logging.ERROR if quiet else logging.INFO,
              "runtime_env": {"env_vars": env} if env else None}
    address = conf.scale.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, **kwargs)
    else:  # "local": a new cluster of our own, never a `ray start` head that happens to run here
        context = ray.init(address="local", num_cpus=os.cpu_count(), **kwargs)
    quiet_data(conf.scale.verbose)
    if quiet:
        where = f"joined the cluster at {address}" if address else f"a local cluster of {os.cpu_count()} CPUs"
        log(f"[kddocre] Ray: {where}" + (f", dashboard http://{context.dashboard_url}" if context.dashboard_url else ""))


def joined(conf: Config) -> bool:
    """True when the run joins an existing cluster (which may grow: an autoscaler adds nodes),
    False when it starts a local one of this machine's resources."""
    return bool(conf.scale.ray_address or os.environ.get("RAY_ADDRESS"))


def check_room(conf: Config, workers: int, cpus_each: float, log=print) -> None:
    """Ray waits, without a word, for resources a cluster does not have. A local cluster never
    will have them: that is bad input, named. A joined one may, once its autoscaler adds nodes:
    that is said, and the run waits."""
    have = ray.cluster_resources()
    need = {"CPU": workers * cpus_each, **({"GPU": workers} if conf.scale.use_gpu else {})}
    short = {k: v for k, v in need.items() if v > have.get(k, 0)}
    if not short:
        return
    said = ", ".join(f"{v:g} {k}" for k, v in short.items())
    asked = (f"scale.num_workers={workers} x {cpus_each:g} CPUs"
             + (" and a GPU each (scale.use_gpu)" if conf.scale.use_gpu else ""))
    if not joined(conf):
        fix = ("set scale.use_gpu=false, or join a cluster with GPUs" if "GPU" in short else
               "lower scale.num_workers or scale.cpus_per_worker, or join a bigger cluster")
        raise InputError(f"{asked} needs {said}, but this machine's Ray cluster has {have.get('CPU', 0):g} CPUs and "
                         f"{have.get('GPU', 0):g} GPUs: {fix} (RAY_ADDRESS, scale.ray_address)")
    log(f"[kddocre] {asked} needs {said}, more than the cluster has now "
        f"({have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs): waiting for the autoscaler to add nodes")
