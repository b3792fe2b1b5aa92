"""The pairs format: strict validation that names file, line and field; round trip; dev split."""

from __future__ import annotations

import json

import pytest

from ddr_search.errors import InputError
from ddr_search.training.pairs import Pair, Passage, read_pairs, split_dev, write_pairs


def _write(tmp_path, lines):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD = {"query": "what is a glacier cave", "positives": ["A glacier cave is a cave in ice."], "domain": "geo"}


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"positives": ["x"]}, "query", "non-empty"),
        ({"query": "  ", "positives": ["x"]}, "query", "non-empty"),
        ({"query": "q"}, "positives", "at least one"),
        ({"query": "q", "positives": "x"}, "positives", "list"),
        ({"query": "q", "positives": [""]}, "positives[0]", "empty"),
        ({"query": "q", "positives": [{"id": "d1"}]}, "positives[0].text", "non-empty"),
        ({"query": "q", "positives": ["x"], "negatives": ["x"]}, "negatives[0]", "both positive and negative"),
        ({"query": "q", "positives": ["x"], "domain": "Not A Slug"}, "domain", "slug"),
        ({"query": "q", "positive": "x", "positives": ["y"]}, "positive", "not both"),
    ],
)
def test_invalid_records_name_file_line_and_field(tmp_path, bad, field, words):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(InputError) as info:
        read_pairs(path)
    assert info.value.path == str(path)
    assert info.value.line == 2
    assert info.value.field == field
    assert words in str(info.value)


def test_unknown_field_and_bad_json_are_errors(tmp_path):
    with pytest.raises(InputError, match="unknown field") as info:
        read_pairs(_write(tmp_path, [{"query": "q", "postives": ["x"]}]))
    assert info.value.line == 1
    with pytest.raises(InputError, match="invalid JSON") as info:
        read_pairs(_write(tmp_path, [GOOD, GOOD, "{oops"]))
    assert info.value.line == 3


def test_round_trip_and_domain_default(tmp_path):
    pairs = [
        Pair("q1", (Passage("p1", "d1", "T"), Passage("p2")), (Passage("n1", "d9"),), "scifact", "1"),
        Pair("q2", (Passage("p3"),)),
    ]
    path = tmp_path / "out.jsonl"
    assert write_pairs(path, pairs) == 2
    back = read_pairs(path, domain="general-web")
    assert back[0] == pairs[0]
    assert back[1].domain == "general-web" and back[1].positives == (Passage("p3"),)


def test_dev_split_is_by_query_and_seeded():
    pairs = [Pair(f"q{i % 20}", (Passage(f"p{i}"),), query_id=str(i % 20)) for i in range(60)]
    train, dev = split_dev(pairs, 0.25, seed=3)
    assert {p.query_id for p in train}.isdisjoint({p.query_id for p in dev})
    assert len({p.query_id for p in dev}) == 5 and len(train) + len(dev) == 60
    assert split_dev(pairs, 0.25, seed=3) == (train, dev)
