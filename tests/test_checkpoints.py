"""The checkpoint door (`kddocre predict` / `evaluate --checkpoint`, `kddocre verify`): a
truncated, replaced or edited `model.pt` (caught by the size and sha256 recorded at save time, or,
in a checkpoint saved without them, by torch), weights that do not fit the model its files
describe, or a folder that is no checkpoint end with status 2 and a message naming the file,
never a torch traceback and never a silent read."""
import json
import shutil

import pytest

from conftest import REPO, SAMPLE, TINY
from kddocre_ray.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A reloadable tiny model folder, as a training run writes it."""
    from kddocre_ray.checkpoint import save_model
    from kddocre_ray.config import load_config
    from kddocre_ray.data.docred import load_schema
    from kddocre_ray.model.docre import build_model
    from kddocre_ray.model.encoder import load_tokenizer

    conf = load_config(REPO / "configs" / "tiny.yaml", TINY)
    schema, tokenizer = load_schema(conf.data.rel_info), load_tokenizer(conf.model.encoder)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    save_model(path, build_model(conf.model, schema, tokenizer, seed=1), conf, schema, tokenizer)
    return path


def predict(folder, tmp_path) -> list[str]:
    return ["predict", "--checkpoint", str(folder), "--data", str(SAMPLE / "test.json"), "--out",
            str(tmp_path / "pred.json")]


def broken_copy(checkpoint, tmp_path, edit) -> str:
    folder = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, folder)
    edit(folder)
    return folder


def truncate(folder):
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])


def edit_a_weight(folder):
    """A valid torch file of the same size: only the recorded digest tells it apart."""
    import torch

    state = torch.load(folder / "model.pt", weights_only=True)
    name = next(iter(state))
    state[name] = state[name] + 1
    torch.save(state, folder / "model.pt")
    assert (folder / "model.pt").stat().st_size == json.loads((folder / "checksums.json").read_text())["model.pt"]["size"]


def without_checksums(edit):
    """A checkpoint saved before checksums were recorded: torch's own error is the last line of defence."""
    def apply(folder):
        (folder / "checksums.json").unlink()
        edit(folder)
    return apply


def drop_a_relation(folder):
    schema = json.loads((folder / "relations.json").read_text())
    schema["relations"] = schema["relations"][:-1]
    (folder / "relations.json").write_text(json.dumps(schema))


@pytest.mark.parametrize("edit, expected", [
    (truncate, "model.pt: {} bytes, but {} were written (truncated or replaced)"),
    (edit_a_weight, "model.pt: its sha256 differs from the one recorded when it was written (edited or corrupt)"),
    (without_checksums(truncate), "model.pt: not readable as model weights, truncated or corrupt"),
    (without_checksums(lambda f: (f / "model.pt").write_bytes(b"not a zip")), "model.pt: not readable as model weights"),
    (drop_a_relation, "relations.json: {} bytes, but {} were written (truncated or replaced)"),
    (without_checksums(drop_a_relation), "model.pt: the weights do not fit the model that config.json, "
                                         "relations.json and encoder/ describe"),
    (lambda f: (f / "model.pt").unlink(), "checkpoint: not a kddocre checkpoint (no model.pt)"),
    (without_checksums(lambda f: __import__("torch").save([1, 2], f / "model.pt")),
     "model.pt: not model weights (a state dict of tensors by name), but a list"),
    (lambda f: ((f / "checksums.json").unlink(), (f / "checksums.json").mkdir()), "checksums.json: a folder, where"),
    (lambda f: (f / "checksums.json").write_text(json.dumps({"../../../../etc/hostname": {"size": 1, "sha256": "0"}})),
     "../../../../etc/hostname: names a file outside the folder"),
], ids=["truncated", "edited", "truncated-old", "not-torch-old", "schema-edited", "schema-mismatch-old",
        "missing-weights", "weights-a-list-old", "checksums-a-folder", "checksums-escape"])
def test_a_bad_checkpoint_ends_with_status_2_naming_the_file(checkpoint, tmp_path, capsys, edit, expected):
    folder = broken_copy(checkpoint, tmp_path, edit)
    if "{}" in expected:
        name = expected.split(":")[0]
        expected = expected.format((folder / name).stat().st_size, (checkpoint / name).stat().st_size)
    with pytest.raises(SystemExit) as e:
        main(predict(folder, tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "pred.json").exists()


def test_the_intact_checkpoint_predicts(checkpoint, tmp_path, capsys):
    main(predict(checkpoint, tmp_path))
    assert isinstance(json.loads((tmp_path / "pred.json").read_text()), list)


def test_verify_checks_every_file_recorded_at_save_time(checkpoint, tmp_path, capsys):
    recorded = json.loads((checkpoint / "checksums.json").read_text())
    assert {"model.pt", "config.json", "relations.json"} <= set(recorded)
    assert any(name.startswith("encoder/") for name in recorded)
    main(["verify", str(checkpoint)])
    assert f"{len(recorded)} files match" in capsys.readouterr().out
    folder = broken_copy(checkpoint, tmp_path, lambda f: (f / "encoder" / "config.json").write_text("{}"))
    with pytest.raises(SystemExit) as e:
        main(["verify", str(folder)])
    assert e.value.code == 2 and "encoder/config.json: 2 bytes, but" in capsys.readouterr().err


@pytest.mark.parametrize("edit, expected", [
    (lambda f: (f / "relations.json").write_text("[1, 2]"), 'relations.json: expected {"relations": [relation ids'),
    (lambda f: (f / "relations.json").write_text('{"relations": ["P17", "P17"]}'), "relations.json: duplicate relation"),
    (lambda f: (f / "config.json").write_text('{"model": {"no_such_key": 1}}'), "config.json: not a kddocre config"),
    (lambda f: (f / "config.json").write_text("{trunc"), "config.json: not a valid JSON file"),
    (lambda f: (f / "encoder" / "config.json").write_text('{"model_type": "no-such-model"}'),
     "encoder: the encoder's config or tokenizer does not load"),
], ids=["schema-not-an-object", "schema-repeats", "config-unknown-key", "config-not-json", "encoder-config"])
def test_damaged_checkpoint_files_end_with_status_2_naming_the_file(checkpoint, tmp_path, capsys, edit, expected):
    """Saved without checksums (which would name the edited file first): each file's own reader speaks."""
    folder = broken_copy(checkpoint, tmp_path, without_checksums(edit))
    with pytest.raises(SystemExit) as e:
        main(predict(folder, tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err and err.count("\n") == 1


def head_of_other_size(folder):
    conf = json.loads((folder / "config.json").read_text())
    conf["model"]["emb_size"] = 128
    (folder / "config.json").write_text(json.dumps(conf))


@pytest.mark.parametrize("key, edit, overrides, expected", [
    ("train.init_from", lambda f: None, ["model.encoder=minilm"],
     "made with encoder tiny-random (model_type=bert, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, "
     "intermediate_size=128, vocab_size=30522), but model.encoder=minilm is model_type=bert, hidden_size=384, "
     "num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, vocab_size=30522"),
    ("train.init_from", without_checksums(head_of_other_size), [], "its head has another shape (model.emb_size: checkpoint 128, this config"),
    ("train.init_from", without_checksums(drop_a_relation), [], "made for a schema of 95 relations, but data.rel_info="),
    ("distill.teacher", without_checksums(drop_a_relation), [], "only in data.rel_info: ['"),
    ("distill.teacher", lambda f: (f / "relations.json").unlink(), [], "not a kddocre checkpoint or run folder (no "
                                                                       "relations.json"),
    ("train.init_from", truncate, [], "/model.pt: "),
], ids=["other-encoder", "other-head", "init-other-schema", "teacher-other-schema", "teacher-no-schema",
        "init-truncated"])
def test_a_checkpoint_made_for_another_model_is_refused_naming_both(checkpoint, tmp_path, capsys, monkeypatch, key,
                                                                     edit, overrides, expected):
    """Before Ray starts (`ray.init` fails the test): the starting weights must fit the model this
    config builds, and a teacher must score the relations of this config's schema."""
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    folder = broken_copy(checkpoint, tmp_path, edit)
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), *TINY, *overrides, f"{key}={folder}",
              f"output_dir={tmp_path / 'runs'}", "tracking.enabled=false"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{key}={folder}: " in err and expected in err, err


@pytest.mark.parametrize("pointer, says", [
    ({"model": "x"}, 'model.json: expected {"checkpoint": '),
    ([1], 'model.json: expected {"checkpoint": '),
    ({"checkpoint": "/no/such/checkpoint"}, "model.json: names the checkpoint /no/such/checkpoint, which is not there"),
], ids=["no-key", "a-list", "gone"])
def test_a_run_folder_whose_model_json_is_damaged_is_named(tmp_path, capsys, pointer, says):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.json").write_text(json.dumps(pointer))
    with pytest.raises(SystemExit) as e:
        main(predict(tmp_path / "run", tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and err.count("\n") == 1, err

