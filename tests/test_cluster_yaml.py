"""cluster.yaml is valid for the Ray cluster launcher and keeps its promises."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_validates_against_the_schema_shipped_with_ray(config):
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    from ray.autoscaler._private.util import validate_config

    validate_config(config)


def test_cpu_head_and_autoscaling_gpu_workers(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu and all(t["min_workers"] == 0 for t in gpu)
    assert all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in gpu)
    assert config["provider"]["type"] == "aws"


def test_installs_the_project_and_holds_no_secrets(config):
    text = (ROOT / "cluster.yaml").read_text()
    assert any("pip install" in c and "asd" in c for c in config["setup_commands"])
    for word in ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "aws_access_key_id", "AKIA"):
        assert word not in text


def test_nodes_install_with_the_pinned_constraints(config):
    """The README says the pins are needed: every node installs with constraints.txt."""
    pip = [c for c in config["setup_commands"] if "pip install" in c]
    assert pip and all("-c ~/asd/constraints.txt" in c for c in pip)
    assert config["file_mounts"]["~/asd"] == "."  # ... which the project folder brings along
