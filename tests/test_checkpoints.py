"""The checkpoint door (`kddocre predict` / `evaluate --checkpoint`): a truncated or edited
`model.pt`, weights that do not fit the model its files describe, or a folder that is no
checkpoint end with status 2 and a message naming the file, never a torch traceback."""
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


def drop_a_relation(folder):
    schema = json.loads((folder / "relations.json").read_text())
    schema["relations"] = schema["relations"][:-1]
    (folder / "relations.json").write_text(json.dumps(schema))


@pytest.mark.parametrize("edit, expected", [
    (truncate, "model.pt: not readable as model weights, truncated or corrupt"),
    (lambda f: (f / "model.pt").write_bytes(b"not a zip"), "model.pt: not readable as model weights"),
    (drop_a_relation, "model.pt: the weights do not fit the model that config.json, relations.json and encoder/ "
                      "describe"),
    (lambda f: (f / "model.pt").unlink(), "checkpoint: not a kddocre checkpoint (no model.pt)"),
], ids=["truncated", "not-torch", "schema-mismatch", "missing-weights"])
def test_a_bad_checkpoint_ends_with_status_2_naming_the_file(checkpoint, tmp_path, capsys, edit, expected):
    folder = broken_copy(checkpoint, tmp_path, edit)
    with pytest.raises(SystemExit) as e:
        main(predict(folder, tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "pred.json").exists()


def test_the_intact_checkpoint_predicts(checkpoint, tmp_path, capsys):
    main(predict(checkpoint, tmp_path))
    assert isinstance(json.loads((tmp_path / "pred.json").read_text()), list)
