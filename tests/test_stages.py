"""The pipeline's plan without running it: which stages exist, what each reads, and which
fingerprints a change of setting moves; input checks before any work."""
import pytest

from conftest import REPO
from kddocre_ray.config import load_config
from kddocre_ray.errors import InputError
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
    # every path key is checked, the teacher and the student's DeepSpeed file too
    conf = load_config(TINY, [f"distill.teacher={tmp_path}/no-teacher", f"output_dir={tmp_path}",
                              f"pipeline.student_deepspeed_config={tmp_path}/no-ds.json"])
    with pytest.raises(FileNotFoundError, match="pipeline.student_deepspeed_config=.*no-ds.json") as e:
        check_inputs(conf)
    assert "distill.teacher=" in str(e.value)


def test_an_object_store_corpus_is_found_where_the_filesystem_has_it(tmp_path):
    """Inputs are checked through pyarrow's filesystems, as the readers read them: a URI the
    filesystem holds is not reported missing, and its documents are read and validated there
    (pyarrow's in-memory mock:// stands for S3 here)."""
    from kddocre_ray.storage import location

    corpus = location("mock://inputs/distant.json")
    corpus.fs.create_dir("inputs")  # the mock is a tree like a disk; a bucket has no folders to make
    corpus.write_bytes((REPO / "kddocre_ray" / "sample" / "distant.json").read_bytes())
    conf = load_config(TINY, ["pipeline.corpus=mock://inputs/distant.json", f"output_dir={tmp_path}"])
    assert conf.pipeline.corpus == "mock://inputs/distant.json"  # a URI stays a URI
    check_inputs(conf)
    conf = load_config(TINY, ["pipeline.corpus=mock://inputs/absent.json", f"output_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="pipeline.corpus=mock://inputs/absent.json"):
        check_inputs(conf)
    corpus.write_bytes(b"[]")
    with pytest.raises(InputError, match="^mock://inputs/distant.json: no document with two or more entities"):
        check_inputs(load_config(TINY, ["pipeline.corpus=mock://inputs/distant.json", f"output_dir={tmp_path}"]))


def test_a_submitted_job_refuses_an_output_folder_inside_its_working_directory(tmp_path, monkeypatch):
    inside = load_config(TINY, [f"output_dir={tmp_path}/runs"])
    outside = load_config(TINY, ["output_dir=/tmp/kddocre-elsewhere"])
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets in a submitted job's driver
    monkeypatch.chdir(tmp_path)  # the job's working directory: Ray's copy of the upload
    with pytest.raises(ValueError, match="working directory"):
        check_inputs(inside)
    check_inputs(outside)


def test_a_finished_stage_records_its_files_and_a_damaged_one_is_not_reused(tmp_path):
    """The manifest lists each file with its size and sha256. Reuse checks sizes only (cheap):
    a truncated or missing file makes the stage damaged, named; an edit that keeps the size is
    found by `verify_stage`, which reads the bytes."""
    from kddocre_ray.pipeline.stages import Building, Stage, verify_stage

    stage = Stage("ingest", "f00", tmp_path / "stages" / "ingest-f00")
    building = Building(stage)
    with building as out:
        (out / "part-00000.parquet").write_bytes(b"rows")
        (out / "sub").mkdir()
        (out / "sub" / "x.bin").write_bytes(b"12345")
        building.commit({"rows": 1}, 0.0)
    assert stage.complete and stage.damage() is None
    assert sorted(stage.manifest["files"]) == ["part-00000.parquet", "sub/x.bin"]
    assert verify_stage(stage.folder) == 2

    (stage.folder / "sub" / "x.bin").write_bytes(b"12346")  # same size: reuse cannot tell
    assert stage.complete
    with pytest.raises(InputError, match=r"ingest-f00: 1 of 2 files do not match the manifest: sub/x.bin: its sha256"):
        verify_stage(stage.folder)

    (stage.folder / "part-00000.parquet").unlink()
    assert stage.damage() == "part-00000.parquet: missing" and not stage.complete
    (stage.folder / "manifest.json").write_text("{not json")
    assert "manifest.json: not a valid JSON file" in stage.damage()
    stage.discard()
    assert not stage.folder.exists()

    evaluate = Stage("evaluate", "e00", tmp_path / "run", owns_folder=False)
    evaluate.folder.mkdir()
    (evaluate.folder / "metrics.json").write_text("{}")
    (evaluate.folder / "pipeline.json").write_text("{}")
    evaluate.commit({}, 0.0, ["metrics.json"])
    assert evaluate.manifest["files"].keys() == {"metrics.json"}
    (evaluate.folder / "metrics.json").write_text("{ }")
    assert evaluate.damage() and not evaluate.complete
    evaluate.discard()  # the run folder stays: only its manifest goes
    assert sorted(p.name for p in evaluate.folder.iterdir()) == ["metrics.json", "pipeline.json"]
