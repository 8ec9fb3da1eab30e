"""Joining or starting the Ray cluster: the one place that calls `ray.init`."""
from __future__ import annotations

import os

import ray

from .config import Config


def submitted_job() -> bool:
    """True in the driver of a `ray job submit` job (Ray sets this variable there), whose working
    directory is Ray's temporary copy of the uploaded folder."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def init_ray(conf: Config) -> None:
    """Join the cluster named in the config or RAY_ADDRESS, else start a local one."""
    if ray.is_initialized():
        return
    address = conf.scale.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:  # "local": a new cluster of our own, never a `ray start` head that happens to run here
        ray.init(address="local", num_cpus=os.cpu_count(), log_to_driver=True)
