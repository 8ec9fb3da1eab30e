"""The fact-file and relation-schema doors (`--facts`, `--rel-info`, `data.train_facts`,
`pipeline.facts`, `data.rel_info`), and where the commands write (`--out`): each malformed case
ends with status 2 and one line naming the file, the entry and the field."""
import json

import pytest

from conftest import make_doc
from kddocre_ray.cli import main

GOOD = {"title": "doc", "h_idx": 1, "t_idx": 2, "r": "P17"}


def write(path, obj) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def evaluate(tmp, facts=None, rel_info=None, gold=None):
    args = ["evaluate", "--pred", write(tmp / "p.json", [GOOD]),
            "--gold", write(tmp / "gold.json", gold if gold is not None else [make_doc()]),
            "--facts", write(tmp / "f.json", facts if facts is not None else [])]
    return args + (["--rel-info", write(tmp / "rel.json", rel_info)] if rel_info is not None else [])


def distant(tmp, facts=None, rel_info=None, out=None):
    args = ["distant", "--docs", write(tmp / "docs.json", [make_doc(labels=[])]),
            "--facts", write(tmp / "f.json", facts if facts is not None else [["John", "Paris", "P17"]]),
            "--out", out or str(tmp / "out.json")]
    return args + (["--rel-info", write(tmp / "rel.json", rel_info)] if rel_info is not None else [])


CASES = {
    # fact files
    "facts-an-object": (lambda t: evaluate(t, facts={"John": "Paris"}), "f.json: expected a JSON list of facts, got dict"),
    "fact-a-pair": (lambda t: evaluate(t, facts=[["John", "Paris"]]),
                    'f.json: fact 0: expected [head name, tail name, relation id], got ["John", "Paris"]'),
    "fact-numbers": (lambda t: distant(t, facts=[["John", "Paris", "P17"], [1, 2, 3]]), "f.json: fact 1: expected"),
    "fact-unknown-relation": (lambda t: evaluate(t, facts=[["John", "Paris", "P999"]]),
                              "f.json: fact 0: relation 'P999' is not in the schema ("),
    "fact-unknown-relation-unmatched": (lambda t: distant(t, facts=[["Nobody", "Nowhere", "P999"]]),
                                        "f.json: fact 0: relation 'P999' is not in the schema"),
    "facts-not-json": (lambda t: distant(t, facts="[[\"John\""), "f.json: not a valid JSON file"),
    # relation schemas
    "schema-a-list": (lambda t: evaluate(t, rel_info=["P17"]), "rel.json: expected a non-empty JSON object of relations"),
    "schema-empty": (lambda t: evaluate(t, rel_info={}), "rel.json: expected a non-empty JSON object"),
    "schema-only-na": (lambda t: evaluate(t, rel_info={"Na": 0}), "rel.json: no relation besides 'Na'"),
    "schema-na-not-zero": (lambda t: distant(t, rel_info={"Na": 3, "P17": 1, "P27": 2}),
                           "rel.json: Na: 'Na' must be class 0 (the threshold class), not 3"),
    "schema-empty-id": (lambda t: evaluate(t, rel_info={"": "nothing", "P17": "country"}),
                        'rel.json: "": a relation id may not be empty'),
    "schema-mixed-values": (lambda t: evaluate(t, rel_info={"P17": "country", "P27": 2}),
                            "rel.json: values must be all relation names (str) or all class ids (int)"),
    "schema-lacks-a-gold-relation": (lambda t: evaluate(t, rel_info={"P27": "citizen"}),
                                     "gold.json: document 0 (\"doc\"): labels[0].r: unknown relation 'P17': not in the "
                                     "schema ("),
    # outputs
    "out-a-folder": (lambda t: distant(t, out=str(t)), ": a folder: give the name of a file to write"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_fact_file_schema_or_output_ends_with_status_2_naming_it(tmp_path, capsys, case):
    make, says = CASES[case]
    with pytest.raises(SystemExit) as e:
        main(make(tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.json").exists()


def test_the_good_inputs_of_the_table_pass(tmp_path, capsys):
    """The table's cases differ from these in the one place they name."""
    main(evaluate(tmp_path, facts=[["John", "Paris", "P17"]], rel_info={"Na": 0, "P17": 1, "P27": 2}))
    main(distant(tmp_path, rel_info={"P17": "country", "P27": "citizen"}))
    assert json.loads((tmp_path / "out.json").read_text())[0]["labels"] == [{"h": 0, "t": 1, "r": "P17", "evidence": []}]
