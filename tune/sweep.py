"""A Ray Tune sweep (γ and the learning rates) as a Ray job: each trial a Ray Train run.

    python tune/sweep.py --config configs/redocred_mini/sweep_gamma.yaml
    ray job submit --working-dir . -- python tune/sweep.py --config configs/tiny.yaml \
        --output-dir /shared/runs

Runs on the Ray cluster named by RAY_ADDRESS or scale.ray_address (the submitted job's own
cluster under `ray job submit`), else on a local one. Same as `kddocre sweep`; see --help.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when run without pip install

from kddocre_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["sweep", *sys.argv[1:]])
