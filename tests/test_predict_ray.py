"""`kddocre predict --ray`: a corpus streamed through the soft labels' actor pool gives exactly the
triples of `kddocre predict` in process, in the corpus's order, with progress, and leaves nothing
behind but its output."""
import json

import pytest
import ray
import torch

from conftest import REPO, SHARED, TINY
from kddocre_ray.cli import main

DEV = SHARED / "re-docred" / "dev_revised.json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, schema):
    """A random tiny model whose threshold class is lowered, so that every pair yields its top
    relation: many triples to compare. One document per forward pass (eval_batch_size=1) in fp32,
    so that the in-process and the Ray paths run the very same computations, whatever batches
    Ray Data forms (padding changes a float's last bits)."""
    from kddocre_ray.checkpoint import save_model
    from kddocre_ray.config import load_config
    from kddocre_ray.model.docre import build_model
    from kddocre_ray.model.encoder import load_tokenizer

    conf = load_config(REPO / "configs" / "tiny.yaml",
                       [*TINY, "train.eval_batch_size=1", "train.precision=fp32", "model.num_labels=1"])
    tokenizer = load_tokenizer(conf.model.encoder)
    model = build_model(conf.model, schema, tokenizer, seed=5)
    with torch.no_grad():
        model.classifier.bias[0] -= 100.0
    path = tmp_path_factory.mktemp("predict") / "checkpoint"
    save_model(path, model, conf, schema, tokenizer)
    return path


@pytest.mark.skipif(not DEV.exists(), reason="needs ../shared/data")
def test_predict_on_ray_gives_the_in_process_triples_in_order(checkpoint, tmp_path, capsys):
    docs = json.loads(DEV.read_text())[:200]
    docs.insert(7, {**docs[0], "title": "lonely", "vertexSet": docs[0]["vertexSet"][:1], "labels": []})  # no pair
    data = tmp_path / "docs.json"
    data.write_text(json.dumps(docs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two actors runs
    try:
        main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "a.json")])
    finally:
        torch.set_num_threads(threads)
    in_process = json.loads((tmp_path / "a.json").read_text())
    out = tmp_path / "out" / "b.jsonl"
    try:
        main(["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), "--ray", "--pool",
              "2", "--batch-size", "16"])
    finally:
        ray.shutdown()  # the command joined the session's cluster in this process: leave it for the next test
    on_ray = [json.loads(line) for line in out.read_text().splitlines()]
    pairs = sum(len(d["vertexSet"]) * (len(d["vertexSet"]) - 1) for d in docs)
    assert len(in_process) == pairs  # one relation per pair: the comparison below covers every pair
    assert on_ray == in_process
    assert [t["title"] for t in on_ray][:1] == [docs[0]["title"]]
    err = capsys.readouterr().err
    assert "[kddocre] predict: 200/200 documents" in err and "documents/s" in err
    assert [p.name for p in out.parent.iterdir()] == ["b.jsonl"]  # its work folder (rows) is gone


def test_predict_on_ray_refuses_bad_flags_before_any_work(checkpoint, tmp_path, capsys):
    for flags, message in ((["--pool", "0"], "--pool must be at least 1"),
                           (["--precision", "bf16"], "drop --precision")):
        with pytest.raises(SystemExit) as e:
            main(["predict", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "x.json"), "--out",
                  str(tmp_path / "o.jsonl"), "--ray", *flags])
        assert e.value.code == 2 and message in capsys.readouterr().err
