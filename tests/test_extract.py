"""From a trained model to a usable one: `kddocre extract` (raw text in, triples out) on real MiniLM
weights trained here, the Python API it shells, and `kddocre export` (a self-contained folder
that reloads in another process with the very same logits)."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, SAMPLE, TINY
from kddocre_ray.cli import main
from kddocre_ray.data.docred import validate_doc

PARAGRAPHS = {
    "bio.txt": ("John Smith was born in London in 1950.  He studied at Oxford University.\n\n"
                "Smith later joined Google, a company founded by Larry Page in California. "
                "In 1998 Page and Smith met in London again."),
    "band.txt": "The Beatles were an English rock band formed in Liverpool in 1960. "
                "John Lennon and Paul McCartney wrote most of their songs for EMI.",
}
RECORD = {"title", "head", "tail", "relation", "relation_name", "score", "h_idx", "t_idx"}


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, schema, sample_docs):
    """Real MiniLM-L6 weights trained a few steps on the shipped sample, saved as a training run
    saves its checkpoint. Its threshold class is then lowered so that every pair yields its top
    relations: the records' shape is what is checked, not their truth (the model is barely trained)."""
    from kddocre_ray.checkpoint import save_model
    from kddocre_ray.config import load_config
    from kddocre_ray.data.features import doc_features, label_matrix
    from kddocre_ray.losses import afl_loss
    from kddocre_ray.model.docre import build_model
    from kddocre_ray.model.encoder import load_tokenizer

    conf = load_config(REPO / "configs" / "tiny.yaml", ["model.axial_layers=0", "train.precision=fp32"])
    tok = load_tokenizer(conf.model.encoder)
    model = build_model(conf.model, schema, tok, seed=0)
    feats = [doc_features(d, tok, schema) for d in sample_docs[:2]]
    labels = torch.cat([label_matrix(f, schema.num_classes) for f in feats])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(2):
        loss = afl_loss(model(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        model.classifier.bias[0] -= 100.0
    path = tmp_path_factory.mktemp("minilm") / "checkpoint"
    save_model(path, model, conf, schema, tok)
    return path


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    for name, text in PARAGRAPHS.items():
        (folder / name).write_text(text)
    return folder


def test_extract_writes_triples_and_the_documents_it_built(minilm, texts, tmp_path, schema, capsys):
    out, docs_out = tmp_path / "triples.jsonl", tmp_path / "docs.json"
    main(["extract", "--checkpoint", str(minilm), "--text", str(texts), "--out", str(out), "--docs-out", str(docs_out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    docs = {d["title"]: d for d in json.loads(docs_out.read_text())}
    assert list(docs) == ["band", "bio"]  # files in name order, titled by their names
    for d in docs.values():
        validate_doc(d, schema)
    bio = docs["bio"]["vertexSet"]
    assert [m["name"] for m in bio[0]] == ["John Smith", "Smith"] and bio[0][0]["type"] == "PER"
    n_pairs = sum(len(d["vertexSet"]) * (len(d["vertexSet"]) - 1) for d in docs.values())
    assert len(records) == 4 * n_pairs  # threshold lowered: model.num_labels=4 relations on every pair
    for r in records:
        assert set(r) == RECORD
        text = PARAGRAPHS[r["title"] + ".txt"]
        for side, idx in (("head", "h_idx"), ("tail", "t_idx")):
            entity = docs[r["title"]]["vertexSet"][r[idx]]
            assert r[side]["name"] == entity[0]["name"] and r[side]["type"] == entity[0]["type"]
            assert r[side]["type"] in {"PER", "ORG", "LOC", "TIME", "NUM", "MISC"}
            for m in r[side]["mentions"]:
                assert text[m["start_char"]:m["end_char"]] == m["name"]
                assert set(m) == {"name", "sent_id", "pos", "start_char", "end_char"}
        assert r["relation"] in schema.relations and r["relation_name"] == schema.names[r["relation"]]
        assert r["score"] > 0 and r["h_idx"] != r["t_idx"]
    assert "triples among" in capsys.readouterr().err


def test_extract_and_predict_are_one_predictor(minilm, texts, tmp_path):
    """The Python API gives the command's records, and `kddocre predict` on the documents extract
    built finds exactly the same (head, tail, relation) triples."""
    from kddocre_ray import Extractor

    extractor = Extractor.load(minilm)
    records = extractor.extract([(p.stem, p.read_text()) for p in sorted(texts.iterdir())])
    docs = extractor.documents([(p.stem, p.read_text()) for p in sorted(texts.iterdir())])
    (tmp_path / "docs.json").write_text(json.dumps(docs))
    main(["predict", "--checkpoint", str(minilm), "--data", str(tmp_path / "docs.json"), "--out", str(tmp_path / "p.json")])
    predicted = json.loads((tmp_path / "p.json").read_text())
    assert records and sorted((r["title"], r["h_idx"], r["t_idx"], r["relation"]) for r in records) == sorted(
        (p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in predicted)
    assert extractor.predict(docs) == records


@pytest.mark.parametrize("content, message", [
    (b"", "the text is empty"),
    (b"\x7fELF\x02\x01\x01\0\0\0", "not text"),
    (b"The weather was nice and everybody was happy.", "found 0 named entities"),
    (b"I love Paris.", "found 1 named entity"),
])
def test_bad_text_gets_a_message_and_no_output(minilm, tmp_path, capsys, content, message):
    (tmp_path / "in.txt").write_bytes(content)
    out, docs_out = tmp_path / "t.jsonl", tmp_path / "d.json"
    with pytest.raises(SystemExit) as e:
        main(["extract", "--checkpoint", str(minilm), "--text", str(tmp_path / "in.txt"), "--out", str(out),
              "--docs-out", str(docs_out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "in.txt" in err and "Traceback" not in err
    assert not out.exists() and not docs_out.exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, schema):
    from kddocre_ray.checkpoint import save_model
    from kddocre_ray.config import load_config
    from kddocre_ray.model.docre import build_model
    from kddocre_ray.model.encoder import load_tokenizer

    conf = load_config(REPO / "configs" / "tiny.yaml", TINY)
    tokenizer = load_tokenizer(conf.model.encoder)
    path = tmp_path_factory.mktemp("tiny") / "checkpoint"
    save_model(path, build_model(conf.model, schema, tokenizer, seed=3), conf, schema, tokenizer)
    return path


PROBE = """
import sys, torch
from kddocre_ray import Extractor
from kddocre_ray.data.docred import read_docs
x = Extractor.load(sys.argv[1])
docs = read_docs(sys.argv[2], x.schema)[0][:4]
torch.save(x.predictor.logits(x.predictor.features(docs)), sys.argv[3])
"""


def test_export_reloads_elsewhere_with_the_same_logits(tiny_checkpoint, tmp_path, capsys):
    from kddocre_ray.inference import Predictor

    out = tmp_path / "exported"
    main(["export", str(tiny_checkpoint), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "encoder", "relations.json", "config.json",
                                               "checksums.json", "README.md"}  # no pickle: no model.pt
    moved = tmp_path / "elsewhere" / "model"  # the run folder is not needed: only the export travels
    moved.parent.mkdir()
    out.rename(moved)
    probe = tmp_path / "logits.pt"
    subprocess.run([sys.executable, "-c", PROBE, str(moved), str(SAMPLE / "test.json"), str(probe)], check=True,
                   cwd=tmp_path)
    theirs = torch.load(probe)
    p = Predictor.load(tiny_checkpoint)
    from kddocre_ray.data.docred import read_docs

    mine = p.logits(p.features(read_docs(SAMPLE / "test.json", p.schema)[0][:4]))
    assert len(theirs) == len(mine) == 4
    assert max((a - b).abs().max().item() for a, b in zip(theirs, mine)) == 0
    # a second export into a folder that holds something is refused, and nothing is written
    with pytest.raises(SystemExit) as e:
        main(["export", str(tiny_checkpoint), "--out", str(moved)])
    assert e.value.code == 2 and "not an empty folder" in capsys.readouterr().err


def test_an_edited_export_is_named_not_loaded(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "exported"
    main(["export", str(tiny_checkpoint), "--out", str(out)])
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-8:] = b"\0" * 8
    (out / "model.safetensors").write_bytes(bytes(data))
    (tmp_path / "t.txt").write_text(PARAGRAPHS["bio.txt"])
    with pytest.raises(SystemExit) as e:
        main(["extract", "--checkpoint", str(out), "--text", str(tmp_path / "t.txt")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model.safetensors" in err and "Traceback" not in err


def test_a_pipeline_run_exports_with_its_model_card(tiny_pipeline, tmp_path):
    out = tmp_path / "exported"
    main(["export", str(tiny_pipeline.run_dir), "--out", str(out)])
    card = (out / "README.md").read_text()
    test_f1 = json.loads((tiny_pipeline.run_dir / "metrics.json").read_text())["test"]["f1"]
    assert f"| test | {test_f1:.2f} |" in card
    assert f"python jobs/distill.py --config {tiny_pipeline.run_dir / 'config.yaml'}" in card
    assert "Distilled (`mse`)" in card


def test_the_pipeline_registers_a_model_that_mlflow_serves_over_http(tiny_pipeline, tmp_path):
    """The tiny pipeline logged its final model on its parent run and registered it under its
    name; `mlflow models serve` on a free port answers a POST of a paragraph (and one of DocRED
    documents) with the records the Extractor gives in process. The weights are in MLflow once."""
    import os
    import signal
    import time

    import requests
    from mlflow import MlflowClient

    from conftest import free_port
    from kddocre_ray import Extractor

    store = f"sqlite:///{tiny_pipeline.out.parent / 'mlflow.db'}"
    client = MlflowClient(store)
    [version] = client.search_model_versions("name='p'")
    parent = json.loads((tiny_pipeline.run_dir / "tracking.json").read_text())["parent"]
    assert version.run_id == parent
    weights = [a.path for run in client.search_runs([client.get_run(parent).info.experiment_id])
               for a in _artifacts(client, run.info.run_id) if a.path.endswith((".safetensors", ".pt"))]
    assert weights == ["model/artifacts/kddocre_model/model.safetensors"]

    port = free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlflow"), "models", "serve", "-m",
                               f"models:/p/{version.version}", "--env-manager", "local", "--host", "127.0.0.1",
                               "-p", str(port)], env={**os.environ, "MLFLOW_TRACKING_URI": store},
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                assert server.poll() is None and time.time() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        extractor = Extractor.load(tiny_pipeline.run_dir)
        text = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=120,
                             json={"dataframe_records": [{"title": "bio", "text": PARAGRAPHS["bio.txt"]}]})
        assert text.status_code == 200, text.text
        assert text.json()["predictions"] == extractor.extract([("bio", PARAGRAPHS["bio.txt"])])
        docs = json.loads((SAMPLE / "test.json").read_text())[:3]
        records = [{k: d[k] for k in ("title", "sents", "vertexSet")} for d in docs]
        # the barely trained tiny model keeps no relation: min_score -1000 keeps each pair's top ones
        served = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=120,
                               json={"dataframe_records": records, "params": {"min_score": -1000.0}})
        assert served.status_code == 200, served.text
        n_pairs = sum(len(d["vertexSet"]) * (len(d["vertexSet"]) - 1) for d in records)
        predictions = served.json()["predictions"]
        assert len(predictions) >= n_pairs and predictions == extractor.predict(records, min_score=-1000.0)
        assert set(predictions[0]) == RECORD
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _artifacts(client, run_id: str, path: str | None = None) -> list:
    out = []
    for a in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, a.path) if a.is_dir else [a])
    return out
