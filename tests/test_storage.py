"""Run folders in an object store (storage.py) against a local S3 server (moto): paths stay
URIs, files round-trip, committed folders are copied to the node once per version, a data stage
in S3 is complete only once its manifest is written, and the tiny pipeline runs with
output_dir=s3://... (Ray Data, Ray Train and the teacher actors reading and writing the bucket),
then a rerun skips every stage."""
import hashlib
import json
from pathlib import Path

import pytest

from conftest import REPO
from kddocre_ray.storage import RemotePath, local_copy, location, resolve

BUCKET = "kddocre-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port; the AWS variables point boto3, pyarrow and every Ray
    process started afterwards (they inherit the environment) at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}"
    server.stop()


def keys(prefix: str = "") -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", [])
                  if not o["Key"].endswith("/"))  # pyarrow's empty-folder markers are not files


def test_uris_stay_uris_and_local_paths_become_absolute(tmp_path, monkeypatch):
    from kddocre_ray.config import load_config

    monkeypatch.chdir(tmp_path)
    assert resolve("s3://b/runs") == "s3://b/runs"  # not $PWD/s3:/b/runs
    assert resolve("runs") == str(tmp_path / "runs")
    assert location("file:///tmp/x") == Path("/tmp/x") and isinstance(location("gs://b/x"), RemotePath)
    conf = load_config(REPO / "configs" / "tiny.yaml", ["output_dir=s3://b/runs", "train.init_from=s3://b/runs/x"])
    assert conf.output_dir == "s3://b/runs" and conf.train.init_from == "s3://b/runs/x"


def test_files_round_trip_and_folders_list(s3):
    from kddocre_ray.storage import read_json, write_json

    folder = location(f"{s3}/roundtrip")
    assert not folder.exists()
    write_json({"a": [1, 2]}, folder / "x.json")
    write_json([1], folder / "plots" / "y.json.gz")
    assert read_json(folder / "x.json") == {"a": [1, 2]} and read_json(folder / "plots" / "y.json.gz") == [1]
    assert keys("roundtrip/") == ["roundtrip/plots/y.json.gz", "roundtrip/x.json"]
    assert folder.is_dir() and (folder / "x.json").is_file() and not (folder / "z.json").exists()
    assert [p.name for p in folder.glob("*.json")] == ["x.json"]
    assert [p.relative_to(folder) for p in folder.glob("plots/*.gz")] == ["plots/y.json.gz"]
    assert (folder / "plots").parent == folder and (folder / "x.json").suffix == ".json"


def test_a_folder_is_copied_to_the_node_once_per_version(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("KDDOCRE_CACHE", str(tmp_path / "cache"))
    folder = location(f"{s3}/copied")
    (folder / "a.txt").write_text("one")
    (folder / "sub" / "b.txt").write_text("two")
    first = local_copy(folder)
    assert (first / "a.txt").read_text() == "one" and (first / "sub" / "b.txt").read_text() == "two"
    assert local_copy(folder) == first  # cached: the same files, not fetched again
    (folder / "a.txt").write_text("three")  # a rewritten folder (kddocre train --overwrite) is fetched again
    second = local_copy(folder)
    assert second != first and (second / "a.txt").read_text() == "three"
    assert local_copy(tmp_path) == tmp_path  # a local folder is used where it is
    with pytest.raises(FileNotFoundError, match="copied-not-there"):
        local_copy(f"{s3}/copied-not-there")


def test_a_data_stage_in_s3_counts_only_once_its_manifest_is_written(s3):
    """S3 has no rename: the stage writes in place and its manifest last; a build that dies
    before the manifest leaves an incomplete stage, which the next build empties."""
    from kddocre_ray.pipeline.stages import Building, Stage

    stage = Stage("ingest", "f00", location(f"{s3}/stages/ingest-f00"))
    with pytest.raises(RuntimeError):
        with Building(stage) as out:
            assert out == stage.folder
            (out / "part-00000.parquet").write_text("half")
            raise RuntimeError("killed")
    assert not stage.complete and keys("stages/") == ["stages/ingest-f00/part-00000.parquet"]
    building = Building(stage)
    with building as out:
        assert keys("stages/") == []  # the dead build's files are gone first
        (out / "part-00001.parquet").write_text("whole")
        assert not stage.complete
        building.commit({"rows": 1}, 0.0)
    assert stage.complete and stage.manifest["counts"] == {"rows": 1}
    assert keys("stages/") == ["stages/ingest-f00/manifest.json", "stages/ingest-f00/part-00001.parquet"]
    assert stage.manifest["files"] == {"part-00001.parquet": {"size": 5, "sha256": hashlib.sha256(b"whole").hexdigest()}}
    # a file of the finished stage replaced by one of another size: the stage is no longer complete
    (stage.folder / "part-00001.parquet").write_text("whole, and more")
    assert stage.damage() == "part-00001.parquet: 15 bytes, but 5 were written (truncated or replaced)"
    assert not stage.complete
    stage.discard()
    assert keys("stages/") == []


def test_the_pipeline_runs_with_its_folders_in_s3(s3, tmp_path, monkeypatch, tiny_pipeline):
    """Every stage reads and writes the bucket: nothing lands on the local disk but the node's
    cache, and a rerun finds every stage complete there. The session pipeline's teacher and
    student, uploaded to the bucket, are found complete there (fine-tuning is the training stage
    built in S3): the soft labels read the teacher's checkpoint from the bucket, fine-tuning the
    student's."""
    from conftest import STAGES, pipeline_args, run_pipeline_at, tiny_corpus
    from kddocre_ray.storage import upload

    monkeypatch.setenv("KDDOCRE_CACHE", str(tmp_path / "cache"))
    # a local cluster of its own, started from this environment: its Ray processes reach the bucket
    # (the AWS variables) and the cache above, which the session's cluster never saw
    monkeypatch.delenv("RAY_ADDRESS")
    corpus = tiny_corpus(tmp_path)
    out = f"{s3}/runs"
    for name in ("teacher", "student"):  # both found complete in the bucket (the student: only its
        stage = tiny_pipeline.stage(name)   # fingerprint counts, so the soft labels built here match it)
        upload(stage, location(f"{out}/stages/{stage.name}"))
    metrics = run_pipeline_at([*pipeline_args(corpus), "tracking.enabled=false"], out)
    assert metrics["test"]["docs"] == 4 and 0 <= metrics["test"]["f1"] <= 100
    pipeline = json.loads(location(f"{out}/p/pipeline.json").read_text())
    assert {s: e["status"] for s, e in pipeline["stages"].items()} == {
        s: "skipped" if s in ("teacher", "student") else "ran" for s in STAGES}
    assert pipeline["stages"]["teacher"]["folder"] == f"{out}/stages/{tiny_pipeline.stage('teacher').name}"
    listed = keys("runs/")
    manifests = [k for k in listed if k.endswith("/manifest.json")]
    assert {k.split("/")[2].rsplit("-", 1)[0] for k in manifests if k.startswith("runs/stages/")} == set(STAGES) - {"evaluate"}
    assert "runs/p/manifest.json" in manifests and "runs/p/plots/training.png" in listed
    for stage in ("student", "finetune"):  # Ray Train's checkpoints went to the bucket too (fine-tuning's here)
        assert stage == "student" or any(k.startswith(f"runs/stages/{stage}-") and "/ray/" in k for k in listed), stage
        assert any(k.startswith(f"runs/stages/{stage}-") and k.endswith("/checkpoint/model.pt") for k in listed), stage
    assert any(k.startswith("runs/stages/soft_labels-") and k.endswith(".parquet") for k in listed)
    assert not [k for k in listed if "/." in k and "/ray/" not in k]  # no temporary files (Ray Train keeps its own)
    assert not (Path.cwd() / "s3:").exists()  # the URI was never taken for a local path

    again = run_pipeline_at([*pipeline_args(corpus), "tracking.enabled=false"], out)
    pipeline = json.loads(location(f"{out}/p/pipeline.json").read_text())
    assert {s: e["status"] for s, e in pipeline["stages"].items()} == {s: "skipped" for s in STAGES}
    assert again["test"] == metrics["test"]


# --- storage.iter_json_list: a JSON list read an item at a time (a corpus in flat memory) ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kddocre_ray.errors import InputError  # noqa: E402
from kddocre_ray.storage import iter_json_list  # noqa: E402

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                       max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(_values, max_size=8), indent=st.sampled_from([None, 0, 2]), chunk=st.integers(1, 64),
       gz=st.booleans())
def test_a_json_list_streams_to_the_items_json_loads_gives(tmp_path_factory, items, indent, chunk, gz):
    """Any window size, any layout (indent puts the items and numbers across lines and windows),
    gzip or not: the same items as parsing the whole file."""
    import gzip

    path = tmp_path_factory.mktemp("j") / ("x.json.gz" if gz else "x.json")
    text = json.dumps(items, indent=indent, ensure_ascii=False).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    assert list(iter_json_list(path, chunk=chunk)) == items


@settings(max_examples=150, deadline=None)
@given(items=st.lists(_values, min_size=1, max_size=6), cut=st.integers(0, 10_000), chunk=st.integers(1, 64),
       junk=st.sampled_from(["", "x", ",", "]", "[", "}"]))
def test_a_damaged_json_list_is_refused_with_its_file_named(tmp_path_factory, items, cut, chunk, junk):
    """A list cut short, or with a character added, is refused (naming the file) exactly when
    json.loads refuses it. Items before the damage may have been yielded: callers write into a
    temporary folder that an error discards (stages.Building)."""
    path = tmp_path_factory.mktemp("j") / "x.json"
    text = json.dumps(items)
    text = text[: cut % len(text)] + junk + text[cut % len(text):]
    path.write_text(text)
    try:
        expected = json.loads(text)
    except json.JSONDecodeError:
        expected = None
    try:
        got = list(iter_json_list(path, chunk=chunk))
    except InputError as exc:
        assert str(path) in str(exc)
        assert not isinstance(expected, list), f"{text!r} parses, but was refused: {exc}"
        return
    assert got == expected, text
