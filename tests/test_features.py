"""Features: `*` markers around every mention, entity positions, pair order, label matrix."""

from conftest import make_doc
from kddocre_ray.data.features import doc_features, label_matrix, length_grouped_batches, pair_index


def test_markers_wrap_every_mention(tokenizer, schema):
    f = doc_features(make_doc(), tokenizer, schema)
    tokens = tokenizer.convert_ids_to_tokens(f.input_ids)
    assert tokens == ["[CLS]", "*", "john", "*", "lives", "in", "*", "paris", "*", ",", "*", "france", "*", ".", "[SEP]"]
    assert f.entity_pos == [[1], [6], [10]]  # the start markers
    assert all(tokens[p] == "*" for pos in f.entity_pos for p in pos)


def test_multi_token_mention_and_multiple_mentions(tokenizer, schema):
    doc = make_doc()
    doc["sents"].append(["Jean", "Dupont", "met", "John", "."])
    doc["vertexSet"][0].append({"name": "John", "pos": [3, 4], "sent_id": 1, "type": "PER"})
    doc["vertexSet"].append([{"name": "Jean Dupont", "pos": [0, 2], "sent_id": 1, "type": "PER"}])
    f = doc_features(doc, tokenizer, schema)
    tokens = tokenizer.convert_ids_to_tokens(f.input_ids)
    assert len(f.entity_pos[0]) == 2
    s = f.entity_pos[3][0]
    assert tokens[s:s + 4] == ["*", "jean", "dupont", "*"]
    assert tokens[f.entity_pos[0][1] + 1] == "john"


def test_labels_become_class_ids(tokenizer, schema):
    f = doc_features(make_doc(), tokenizer, schema)
    assert f.labels == [(1, 2, schema.rel2id["P17"])]


def test_pair_index_row_major_without_self_pairs():
    assert pair_index(3).tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    assert pair_index(1).shape == (0, 2)


def test_label_matrix(tokenizer, schema):
    labels = [{"h": 2, "t": 1, "r": "P17", "evidence": []}, {"h": 2, "t": 1, "r": "P131", "evidence": []}]
    f = doc_features(make_doc(labels=labels), tokenizer, schema)
    y = label_matrix(f, schema.num_classes)
    assert y.shape == (6, schema.num_classes)
    assert y[5, schema.rel2id["P17"]] == 1 and y[5, schema.rel2id["P131"]] == 1 and y[5, 0] == 0
    assert y[:5, 0].tolist() == [1.0] * 5 and y[:5, 1:].sum() == 0


def test_label_matrix_rows_follow_pair_index(tokenizer, schema):
    """A label (h, t) lands on the row where pair_index holds (h, t), for h < t and h > t alike."""
    labels = [{"h": 0, "t": 2, "r": "P17", "evidence": []}, {"h": 1, "t": 0, "r": "P131", "evidence": []}]
    f = doc_features(make_doc(labels=labels), tokenizer, schema)
    y = label_matrix(f, schema.num_classes)
    pairs = pair_index(f.n_entities).tolist()
    assert y[pairs.index([0, 2]), schema.rel2id["P17"]] == 1
    assert y[pairs.index([1, 0]), schema.rel2id["P131"]] == 1
    assert y[:, 1:].sum() == 2 and y[:, 0].sum() == len(pairs) - 2


def test_length_grouped_batches_cover_all_and_group_lengths():
    lengths = [10, 500, 12, 480, 11, 490, 13, 470]
    batches = length_grouped_batches(lengths, 2, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert max(lengths[i] for i in b) - min(lengths[i] for i in b) < 50
    assert length_grouped_batches(lengths, 2, seed=3) == length_grouped_batches(lengths, 2, seed=3)
