"""The pipeline's plan without running it: which stages exist, what each reads, and which
fingerprints a change of setting moves; input checks before any work."""
import pytest

from conftest import REPO
from kddocre_ray.config import load_config
from kddocre_ray.pipeline.run import check_inputs
from kddocre_ray.pipeline.stages import plan

TINY = REPO / "configs" / "tiny.yaml"


def stages(*overrides, out="/tmp/kddocre-plan"):
    return {s.name: s for s in plan(load_config(TINY, [f"output_dir={out}", *overrides]))}


def test_kd_plan_reads_soft_labels_and_fine_tunes_from_the_student():
    s = stages()
    assert list(s) == ["teacher", "ingest", "soft_labels", "student", "finetune", "evaluate"]
    assert s["teacher"].conf.distill.teacher is None and s["teacher"].conf.data.train_rows is None
    assert s["student"].conf.data.train_rows == str(s["soft_labels"].folder)
    assert s["student"].conf.train.epochs == 1 and s["student"].conf.data.test is None  # pipeline.pretrain_epochs
    assert s["student"].conf.data.dev is None  # init_from: last
    assert s["finetune"].conf.train.init_from == str(s["student"].folder)
    assert s["finetune"].conf.train.epochs == 2  # unset finetune_epochs: train.epochs
    assert s["soft_labels"].inputs == {"teacher": s["teacher"].fingerprint, "ingest": s["ingest"].fingerprint}
    for stage in s.values():
        assert stage.folder.name.endswith(stage.fingerprint) or stage.name == "evaluate"


def test_na_needs_no_teacher():
    s = stages("distill.kd=none")
    assert list(s) == ["ingest", "student", "finetune", "evaluate"]
    assert s["student"].conf.data.train_rows == str(s["ingest"].folder)
    assert s["student"].conf.distill.kd == "none"


def test_a_kd_setting_moves_only_the_student_stages():
    a, b = stages(), stages("distill.weight=0.5")
    for name in ("teacher", "ingest", "soft_labels"):
        assert a[name].fingerprint == b[name].fingerprint, name
    for name in ("student", "finetune", "evaluate"):
        assert a[name].fingerprint != b[name].fingerprint, name
    c = stages("train.seed=1")  # the seed moves everything trained
    assert c["teacher"].fingerprint != a["teacher"].fingerprint and c["ingest"].fingerprint == a["ingest"].fingerprint
    d = stages(out="/tmp/elsewhere")  # where outputs go moves nothing but the folders
    assert [x.fingerprint for x in d.values()] == [x.fingerprint for x in a.values()]


def test_best_student_is_chosen_on_dev():
    s = stages("pipeline.init_from=best")
    assert s["student"].conf.data.dev is not None


def test_missing_inputs_are_named_before_any_work(tmp_path):
    conf = load_config(TINY, [f"pipeline.corpus={tmp_path}/nope.json", f"output_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="pipeline.corpus=.*nope.json"):
        check_inputs(conf)


def test_a_submitted_job_refuses_an_output_folder_inside_its_working_directory(tmp_path, monkeypatch):
    inside = load_config(TINY, [f"output_dir={tmp_path}/runs"])
    outside = load_config(TINY, ["output_dir=/tmp/kddocre-elsewhere"])
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets in a submitted job's driver
    monkeypatch.chdir(tmp_path)  # the job's working directory: Ray's copy of the upload
    with pytest.raises(ValueError, match="working directory"):
        check_inputs(inside)
    check_inputs(outside)
