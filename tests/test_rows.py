"""The door of a rows folder (`data.train_rows`: ingested Parquet rows, or soft-label shards):
every file, column and row is checked on the driver before Ray starts; each malformed case is an
InputError naming the file, the document (doc_index and title) and the column, and `kddocre
train` ends with status 2 and that one line."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import REPO, TINY
from kddocre_ray.data.features import doc_features
from kddocre_ray.data.rows import FEATURE_SCHEMA, TEACHER_LOGITS, check_rows, feature_table, with_teacher_logits
from kddocre_ray.errors import InputError


@pytest.fixture(scope="module")
def table(sample_docs, tokenizer, schema) -> pa.Table:
    """Soft-label rows of six sample documents, logits drawn at random (their values are not checked)."""
    docs = [d for d in sample_docs if len(d["vertexSet"]) >= 2][:6]
    feats = [doc_features(d, tokenizer, schema) for d in docs]
    logits = [torch.randn(f.n_entities * (f.n_entities - 1), schema.num_classes) for f in feats]
    return with_teacher_logits(feature_table(feats, "c0ffee", list(range(len(feats)))), logits)


def write(folder, table: pa.Table, name: str = "part-00000.parquet"):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)
    return folder / name


def replace(table: pa.Table, column: str, row: int, value) -> pa.Table:
    """The table with one row's value of `column` replaced (same type)."""
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(table.schema.get_field_index(column), table.schema.field(column),
                            pa.array(values, type=table.schema.field(column).type))


def test_good_rows_pass_and_are_counted(table, schema, tmp_path):
    write(tmp_path, table.slice(0, 4))
    write(tmp_path, table.slice(4), "part-00001.parquet")
    assert check_rows(tmp_path, schema.num_classes, with_teacher=True) == 6
    assert check_rows(tmp_path, schema.num_classes, with_teacher=False) == 6  # a student without KD ignores them


def n_of(table, row):
    return table.column("n_entities")[row].as_py()


# (how the rows are broken, the column named, what the message says)
CASES = {
    "too-few-logits": (lambda t, C: replace(t, TEACHER_LOGITS, 2, [0.0] * 5), TEACHER_LOGITS,
                       "values"),
    "entity-count": (lambda t, C: replace(t, "n_entities", 1, n_of(t, 1) + 1), "entity_pos",
                     "one non-empty list of positions inside the tokens per entity"),
    "one-entity": (lambda t, C: replace(t, "n_entities", 3, 1), "n_entities", "at least 2 entities"),
    "token-count": (lambda t, C: replace(t, "n_tokens", 0, 3), "n_tokens", "the length of input_ids"),
    "position-past-the-end": (lambda t, C: replace(t, "entity_pos", 4, [[10 ** 6]] * n_of(t, 4)), "entity_pos",
                              "inside the tokens"),
    "entity-without-mentions": (lambda t, C: replace(t, "entity_pos", 4, [[]] * n_of(t, 4)), "entity_pos",
                                "non-empty"),
    "label-head-out-of-range": (lambda t, C: replace(t, "labels", 5, [99, 0, 1]), "labels", "h != t < n_entities"),
    "label-h-equals-t": (lambda t, C: replace(t, "labels", 5, [1, 1, 1]), "labels", "h != t"),
    "label-class-out-of-range": (lambda t, C: replace(t, "labels", 5, [0, 1, C]), "labels", "1 <= class < "),
    "label-class-na": (lambda t, C: replace(t, "labels", 5, [0, 1, 0]), "labels", "1 <= class"),
    "half-a-triple": (lambda t, C: replace(t, "labels", 5, [0, 1]), "labels", "triples"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_row_is_named_by_file_document_and_column(table, schema, tmp_path, case):
    breaks, column, says = CASES[case]
    broken = breaks(table, schema.num_classes)
    bad_row = next(i for i in range(len(table)) if broken.slice(i, 1) != table.slice(i, 1))
    file = write(tmp_path, broken)
    with pytest.raises(InputError) as e:
        check_rows(tmp_path, schema.num_classes, with_teacher=True)
    title = table.column("title")[bad_row].as_py()
    assert str(e.value).startswith(f"{file}: document {bad_row} ({json.dumps(title)}): {column}: expected ")
    assert says in str(e.value)


@pytest.mark.parametrize("make, says", [
    (lambda t, f: None, "no Parquet files"),
    (lambda t, f: (f / "part-00000.parquet").write_bytes(b"PAR1 not really"), "part-00000.parquet: not a readable Parquet"),
    (lambda t, f: write(f, t.drop_columns([TEACHER_LOGITS])), "part-00000.parquet: no column teacher_logits (rows "
                                                             "without soft labels"),
    (lambda t, f: write(f, t.drop_columns(["entity_pos"])), "part-00000.parquet: no column entity_pos"),
    (lambda t, f: write(f, t.set_column(1, pa.field("doc_index", pa.string()), pa.array(["x"] * len(t)))),
     "part-00000.parquet: column doc_index is string, expected int64"),
    (lambda t, f: write(f, t.slice(0, 0)), "no rows"),
], ids=["empty-folder", "not-parquet", "no-soft-labels", "missing-column", "wrong-type", "no-rows"])
def test_a_bad_folder_or_file_is_named(table, schema, tmp_path, make, says):
    folder = tmp_path / "rows"
    folder.mkdir()
    make(table, folder)
    with pytest.raises(InputError, match=f"^{folder}.*" + says.replace("(", r"\(")):
        check_rows(folder, schema.num_classes, with_teacher=True)


def test_a_stage_folder_is_checked_against_its_manifest_sizes(table, schema, tmp_path):
    """A folder a stage wrote is trusted by its manifest: sizes (no row read); a shard cut
    short since is named."""
    file = write(tmp_path, table)
    size = file.stat().st_size
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {file.name: {"size": size, "sha256": "0" * 64}}}))
    assert check_rows(tmp_path, schema.num_classes, with_teacher=True) == len(table)
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(InputError, match=f"{file}: {size - 10} bytes, but {size} were written"):
        check_rows(tmp_path, schema.num_classes, with_teacher=True)


def test_the_feature_layout_is_what_the_door_checks():
    assert FEATURE_SCHEMA.names == ["corpus", "doc_index", "title", "n_entities", "n_tokens", "input_ids",
                                    "entity_pos", "labels"]


def test_kddocre_train_on_bad_rows_ends_with_status_2_before_ray_starts(table, tmp_path, capsys, monkeypatch):
    """No Ray start: `ray.init` would fail the test if the door let the run through."""
    import ray

    from kddocre_ray.cli import main

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started on bad rows"))
    file = write(tmp_path / "rows", replace(table, TEACHER_LOGITS, 1, list(np.zeros(4, np.float16))))
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), *TINY, f"data.train_rows={file.parent}",
              f"output_dir={tmp_path}", "tracking.enabled=false"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"{file}: document 1 (" in err and "teacher_logits: expected" in err


def test_a_bad_row_a_worker_finds_ends_as_one_line_naming_it(table, tmp_path):
    """A folder whose manifest vouches for its files passes the door on sizes alone; a row that
    is bad all the same (written so by hand) is found by the worker that streams it, and reaches
    the user as the door's one line and status 2, not as a worker's traceback. (In a subprocess:
    the test process must not stay connected to a cluster other tests start themselves.)"""
    import hashlib
    import subprocess
    import sys

    file = write(tmp_path / "rows", replace(table, TEACHER_LOGITS, 1, list(np.zeros(4, np.float16))))
    record = {file.name: {"size": file.stat().st_size, "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}}
    (file.parent / "manifest.json").write_text(json.dumps({"fingerprint": "f00", "files": record}))
    done = subprocess.run([sys.executable, "-m", "kddocre_ray.cli", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
                           *TINY, f"data.train_rows={file.parent}", "train.epochs=1", "scale.max_failures=0",
                           f"output_dir={tmp_path / 'runs'}", "tracking.enabled=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    # the driver's own lines: Ray streams the workers' (prefixed "(RayTrainWorker pid=...)") beside them
    driver = [line for line in done.stderr.splitlines() if "RayTrainWorker" not in line and "TrainController" not in line]
    [said] = [line for line in driver if line.startswith("kddocre train:")]
    assert said.startswith("kddocre train: soft labels: document 1 (") and "teacher_logits: 4 values, expected" in said
    assert not any(line.startswith("Traceback") for line in driver)
