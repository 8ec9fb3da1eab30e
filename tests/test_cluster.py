"""cluster.yaml is a launcher file Ray accepts (its own schema, after `prepare_config` fills the
defaults `ray up` fills), with the node types and traps the file promises."""
import copy
import re

import pytest
import yaml

from conftest import REPO


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def validate(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_passes_the_launchers_schema(cluster):
    validate(cluster)
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["v100x1"]["min_workers"] = "none"  # the schema must catch this
    from jsonschema import ValidationError

    with pytest.raises(ValidationError, match="min_workers|'none'"):
        validate(broken)


def test_v100_workers_of_one_four_and_eight_gpus_and_a_cpu_head(cluster):
    types = cluster["available_node_types"]
    gpus = {t["node_config"]["InstanceType"]: t["resources"].get("GPU", 0) for t in types.values()}
    assert gpus == {"m5.2xlarge": 0, "p3.2xlarge": 1, "p3.8xlarge": 4, "p3.16xlarge": 8}
    assert cluster["head_node_type"] == "head" and types["head"]["resources"].get("GPU", 0) == 0
    assert all(t["min_workers"] == 0 for name, t in types.items() if name != "head")


def test_gpu_nodes_install_the_pinned_torch_as_a_cuda_12_6_build(cluster):
    """V100 needs sm_70 kernels, which CUDA 13 wheels dropped; the version is pyproject's pin."""
    pin = re.search(r'"torch==([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    commands = " ".join(cluster["setup_commands"])
    assert f"torch=={pin}" in commands and "whl/cu126" in commands
    assert commands.index("whl/cu126") < commands.index("pip install -e")  # before the project


def test_nothing_but_ssh_faces_outside(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "/mnt/shared" in " ".join(cluster["setup_commands"])  # shared storage on every node
