"""Fingerprints: result-changing keys by value, paths by content; a resume with another config
is refused with the changed keys named."""
import json

import pytest

from conftest import REPO
from kddocre_ray.config import load_config
from kddocre_ray.fingerprint import changed_keys, code_version, result_values
from kddocre_ray.train.run import prepare_run_dir

TINY = REPO / "configs" / "tiny.yaml"


def test_paths_enter_by_content_and_output_keys_not_at_all(tmp_path):
    a = result_values(load_config(TINY))
    copy = tmp_path / "train.json"
    copy.write_bytes((REPO / "kddocre_ray" / "sample" / "train.json").read_bytes())
    b = result_values(load_config(TINY, [f"data.train.path={copy}", "name=other", f"output_dir={tmp_path}",
                                         "train.eval_batch_size=3", "model.bilinear_chunk=7"]))
    assert a == b  # same bytes elsewhere, another name / output folder / speed setting: same run
    assert a["data.train.path"].startswith("sha256:")
    copy.write_text(json.dumps(json.loads(copy.read_text())[:5]))
    c = result_values(load_config(TINY, [f"data.train.path={copy}"]))
    assert changed_keys(a, c) == [f"data.train.path: {a['data.train.path']!r} -> {c['data.train.path']!r}"]


def test_worker_count_and_learning_rate_change_the_result():
    a = result_values(load_config(TINY))
    b = result_values(load_config(TINY, ["scale.num_workers=2", "train.head_lr=0.5"]))
    assert [c.split(":")[0] for c in changed_keys(a, b)] == ["scale.num_workers", "train.head_lr"]


def test_code_version_is_a_stable_hash_of_the_sources():
    assert code_version() == code_version() and len(code_version()) == 16


def test_unfinished_run_with_another_config_is_refused(tmp_path):
    conf = load_config(TINY, [f"output_dir={tmp_path}", "name=r"])
    run_dir = prepare_run_dir(conf)
    assert (run_dir / "fingerprint.json").exists()
    prepare_run_dir(load_config(TINY, [f"output_dir={tmp_path}", "name=r", "train.eval_batch_size=2"]))  # same run
    changed = load_config(TINY, [f"output_dir={tmp_path}", "name=r", "train.head_lr=0.5", "loss.gamma=1.0"])
    with pytest.raises(ValueError, match=r"loss.gamma: 0.5 -> 1.0; train.head_lr: 0.0003 -> 0.5"):
        prepare_run_dir(changed)
    prepare_run_dir(changed, overwrite=True)  # --overwrite starts it afresh
    assert json.loads((run_dir / "fingerprint.json").read_text())["train.head_lr"] == 0.5
