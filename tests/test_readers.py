"""Readers on the synthetic samples and on small hand-written files."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from promptscale.data.readers import READERS
from promptscale.data.samples import main, write_samples
from promptscale.errors import DataError

FOLDERS = {
    "boolq": "BoolQ",
    "cb": "CB",
    "copa": "COPA",
    "rte": "RTE",
    "wic": "WiC",
    "wsc": "WSC",
    "multirc": "MultiRC",
    "record": "ReCoRD",
}
FIELDS = {
    "boolq": {"passage", "question"},
    "cb": {"premise", "hypothesis"},
    "rte": {"premise", "hypothesis"},
    "wic": {"word", "word1", "sentence1", "sentence2"},
    "wsc": {"text", "span1", "span2", "passage", "span2_index"},
    "copa": {"premise", "question"},
    "multirc": {"passage", "question", "answer"},
    "record": {"passage", "query", "query_before", "query_after"},
}
SIZES = {"train": 32, "dev32": 32, "val": 48}
NER = ["O"] + [f"{p}-{t}" for t in ("PER", "LOC", "ORG", "MISC") for p in "BI"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    return write_samples(tmp_path_factory.mktemp("samples"))


def jsonl(tmp_path: Path, *records, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_registry_names():
    assert set(READERS) == {"boolq", "cb", "copa", "rte", "wic", "wsc", "multirc", "record", "conll"}


@pytest.mark.parametrize("split", SIZES)
@pytest.mark.parametrize("task", ["boolq", "cb", "copa", "rte", "wic", "wsc"])
def test_samples_one_example_per_line(samples, task, split):
    examples = READERS[task](samples / "fewglue" / FOLDERS[task] / f"{split}.jsonl", None)
    assert len(examples) == SIZES[split]
    assert all(set(e.fields) == FIELDS[task] and all(e.fields.values()) for e in examples)
    assert len({e.guid for e in examples}) == len(examples)
    counts = Counter(e.label for e in examples)
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced


def test_samples_field_contents(samples):
    fewglue = samples / "fewglue"
    for e in READERS["wsc"](fewglue / "WSC" / "val.jsonl", None):
        assert f"*{e.fields['span2']}*" in e.fields["text"]
        assert e.fields["span1"] in e.fields["text"]
    for e in READERS["wic"](fewglue / "WiC" / "val.jsonl", None):
        assert e.fields["word"] in e.fields["sentence1"].lower() and e.fields["word"] in e.fields["sentence2"].lower()
    for e in READERS["copa"](fewglue / "COPA" / "val.jsonl", None):
        assert e.fields["question"] in ("cause", "effect")
        assert len(e.candidates) == 2 and e.gold == [e.label]
    for e in READERS["boolq"](fewglue / "BoolQ" / "val.jsonl", None):
        assert not e.fields["question"].endswith("?") and " -- " in e.fields["passage"]


def test_samples_multirc(samples):
    for split, n in SIZES.items():
        examples = READERS["multirc"](samples / "fewglue" / "MultiRC" / f"{split}.jsonl", None)
        groups = defaultdict(list)
        for e in examples:
            assert set(e.fields) == FIELDS["multirc"]
            groups[e.group].append(e.label)
        assert len({g.split("-")[0] for g in groups}) == n
        assert len(groups) == n + n // 2  # one or two questions per passage
        assert all(sorted(labels) == [0, 0, 1, 1] for labels in groups.values())
        assert len({e.guid for e in examples}) == len(examples)


def test_samples_record(samples):
    for split, n in SIZES.items():
        examples = READERS["record"](samples / "fewglue" / "ReCoRD" / f"{split}.jsonl", None)
        assert len(examples) == n
        for e in examples:
            assert set(e.fields) == FIELDS["record"] and "@highlight" not in e.fields["passage"]
            assert e.label is not None and e.gold == [e.label]
            answer = e.candidates[e.label]
            assert e.answers == [answer]
            filled = (e.fields["query_before"] + " " + answer + e.fields["query_after"]).strip()
            assert filled == e.fields["query"].replace("@placeholder", answer)
            assert len(set(e.candidates)) == len(e.candidates)


@pytest.mark.parametrize("split,n", [("train", 60), ("valid", 30), ("test", 30)])
def test_samples_conll(samples, split, n):
    path = samples / "conll2003" / f"{split}.txt"
    assert path.read_text().startswith("-DOCSTART- -X- -X- O\n\n")
    examples = READERS["conll"](path, NER)
    assert len(examples) == n
    for e in examples:
        assert e.fields == {} and e.label is None
        assert len(e.tokens) == len(e.tags) > 0
    tags = Counter(t.split("-")[-1] for e in examples for t in e.tags)
    assert {"PER", "LOC", "ORG", "MISC", "O"} <= set(tags)


def test_samples_deterministic(tmp_path):
    def contents(root):
        return {p.relative_to(root): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}

    a = contents(write_samples(tmp_path / "a", seed=3))
    assert a == contents(write_samples(tmp_path / "b", seed=3))
    assert a != contents(write_samples(tmp_path / "c", seed=4))
    assert len(a) == 8 * 3 + 3


def test_samples_cli(tmp_path, capsys):
    main([str(tmp_path / "out"), "--seed", "1"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert (tmp_path / "out" / "fewglue" / "ReCoRD" / "val.jsonl").is_file()


def test_bool_labels_map_by_str(tmp_path):
    path = jsonl(
        tmp_path,
        {"passage": "p", "question": "q", "label": True, "idx": 7},
        {"passage": "p", "question": "q", "label": False},
        {"passage": "p", "question": "q"},
        {"passage": "p", "question": "q", "label": -1},
    )
    examples = READERS["boolq"](path, ["False", "True"])
    assert [e.label for e in examples] == [1, 0, None, None]
    assert [e.guid for e in examples] == ["7", "2", "3", "4"]
    assert [e.label for e in READERS["boolq"](path, ["True", "False"])][:2] == [0, 1]
    assert [e.label for e in READERS["boolq"](path, None)][:2] == [1, 0]


def test_string_labels(tmp_path):
    path = jsonl(tmp_path, {"premise": "a", "hypothesis": "b", "label": "neutral", "idx": 0})
    assert READERS["cb"](path, ["entailment", "contradiction", "neutral"])[0].label == 2
    assert READERS["cb"](path, ["neutral", "entailment"])[0].label == 0


def test_wsc_marks_pronoun(tmp_path):
    def record(text, index, pronoun="it", label=True):
        return {
            "text": text,
            "target": {"span1_text": "The cat", "span1_index": 0, "span2_text": pronoun, "span2_index": index},
            "label": label,
        }

    path = jsonl(
        tmp_path,
        record("The cat chased the dog because it was hungry.", 6),
        record('The cat said "leave me alone," and the dog left it.', 10),
        record("The dog tired the cat , so the cat let it rest.", 11),  # off by one: corrected
        record("The cat sat because He was tired.", 4, pronoun="he", label=False),
    )
    examples = READERS["wsc"](path, None)
    assert examples[0].fields == {
        "text": "The cat chased the dog because *it* was hungry.",
        "span1": "The cat",
        "span2": "it",
        "passage": "The cat chased the dog because it was hungry.",  # the record's own, for lm-eval's pattern
        "span2_index": "6",
    }
    assert examples[1].fields["text"].endswith("dog left *it*.")
    assert examples[2].fields["text"] == "The dog tired the cat , so the cat let *it* rest."
    assert examples[3].fields["text"] == "The cat sat because *He* was tired."
    assert [e.label for e in examples] == [1, 1, 1, 0]

    bad = jsonl(tmp_path, record("The cat chased the dog because it was hungry.", 2), name="bad.jsonl")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: .*span2_index=2 points at 'chased', not 'it'"):
        READERS["wsc"](bad, None)


def test_multirc_groups_and_cleaning(tmp_path):
    passage = {
        "text": "<b>Sent 1: </b>Ann met Bo.<br><b>Sent 2: </b>They ate <i>soup</i>.<br>",
        "questions": [
            {
                "question": "Who met?",
                "idx": 0,
                "answers": [{"text": "Ann", "idx": 10, "label": 1}, {"text": "Cy", "idx": 11, "label": 0}],
            },
            {"question": "What?", "idx": 3, "answers": [{"text": "soup", "idx": 12}]},
        ],
    }
    examples = READERS["multirc"](jsonl(tmp_path, {"idx": 5, "passage": passage}), ["False", "True"])
    assert [e.group for e in examples] == ["5-0", "5-0", "5-3"]
    assert [e.guid for e in examples] == ["10", "11", "12"]
    assert [e.label for e in examples] == [1, 0, None]
    assert examples[0].fields == {"passage": "Ann met Bo.\nThey ate soup.", "question": "Who met?", "answer": "Ann"}


def test_copa_candidates(tmp_path):
    record = {"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "cause", "label": 1, "idx": 4}
    [e] = READERS["copa"](jsonl(tmp_path, record), None)
    assert (e.guid, e.fields, e.candidates, e.label, e.gold) == (
        "4",
        {"premise": "P.", "question": "cause"},
        ["A.", "B."],
        1,
        [1],
    )
    with pytest.raises(DataError, match=r"data\.jsonl:1: label 2 is not one of \[0, 1\]"):
        READERS["copa"](jsonl(tmp_path, dict(record, label=2)), None)


def test_record_inclusive_spans_and_gold(tmp_path):
    text = "Rome and Paris met Rome.\n@highlight\nParis wins"
    entities = [{"start": 0, "end": 3}, {"start": 9, "end": 13}, {"start": 19, "end": 22}, {"start": 36, "end": 40}]
    record = {
        "idx": 1,
        "passage": {"text": text, "entities": entities},
        "qas": [
            {
                "query": "Fans in @placeholder cheered.",
                "idx": 9,
                "answers": [{"start": 9, "end": 13, "text": "Paris"}, {"start": 36, "end": 40, "text": "Paris"}],
            },
            {"query": "@placeholder lost", "idx": 10, "answers": [{"start": 0, "end": 1, "text": "Ro"}]},
            {"query": "@placeholder?", "idx": 11},
        ],
    }
    first, nomatch, unlabeled = READERS["record"](jsonl(tmp_path, record), None)
    assert first.candidates == ["Rome", "Paris"]
    assert (first.guid, first.answers, first.gold, first.label) == ("9", ["Paris"], [1], 1)
    assert first.fields == {
        "passage": "Rome and Paris met Rome.\n- Paris wins",
        "query": "Fans in @placeholder cheered.",
        "query_before": "Fans in",
        "query_after": " cheered.",
    }
    assert (nomatch.answers, nomatch.gold, nomatch.label) == (["Ro"], [], None)
    assert (unlabeled.answers, unlabeled.gold, unlabeled.label) == (None, None, None)
    assert nomatch.fields["query_before"] == "" and nomatch.fields["query_after"] == " lost"


def write(tmp_path: Path, text: str, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_conll_iob1_to_iob2(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n\n"
        "Ann NNP I-NP I-PER\nLee NNP I-NP I-PER\nsaw VBD I-VP O\nRome NNP I-NP I-LOC\nParis NNP I-NP B-LOC\n"
        "Acme NNP I-NP I-ORG\nOslo NNP I-NP I-LOC\n\n\n"
        "-DOCSTART- -X- -X- O\n\nHi UH O O\n"
    )
    path = write(tmp_path, text)
    first, second = READERS["conll"](path, NER)
    assert first.tokens == ["Ann", "Lee", "saw", "Rome", "Paris", "Acme", "Oslo"]
    assert first.tags == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-LOC"]
    assert (first.guid, first.fields, second.guid, second.tags) == ("3", {}, "14", ["O"])
    assert READERS["conll"](path, None, tag_column=2)[0].tags == [
        "B-NP",
        "I-NP",
        "B-VP",
        "B-NP",
        "I-NP",
        "I-NP",
        "I-NP",
    ]


@pytest.mark.parametrize(
    "task,lines,message",
    [
        ("rte", ['{"premise": "a", "hypothesis": "b"}', '{"premise": "a",'], r"data\.jsonl:2: malformed JSON"),
        ("rte", ['{"premise": "a", "label": "entailment"}'], r"data\.jsonl:1: missing key 'hypothesis'"),
        (
            "rte",
            ['{"premise": "a", "hypothesis": "b", "label": "maybe"}'],
            r"data\.jsonl:1: label 'maybe' is not one of \['entailment', 'not_entailment'\]",
        ),
        ("wsc", ['{"text": "a b", "label": true}'], r"data\.jsonl:1: missing key 'target'"),
        (
            "multirc",
            ['{"passage": {"text": "t", "questions": [{"question": "q", "answers": [{"idx": 1}]}]}}'],
            r"data\.jsonl:1: missing key 'passage\.questions\[0\]\.answers\[0\]\.text'",
        ),
        (
            "multirc",
            ['{"passage": {"text": "t", "questions": [{"question": "q", "answers": [{"text": "x", "label": 2}]}]}}'],
            r"data\.jsonl:1: label '2' is not one of \['False', 'True'\]",
        ),
        (
            "record",
            ['{"passage": {"text": "ab", "entities": [{"start": 0, "end": 2}]}, "qas": []}'],
            r"data\.jsonl:1: entity span \[0, 2\] is outside the passage",
        ),
        (
            "record",
            ['{"passage": {"text": "ab", "entities": []}, "qas": [{"query": "no slot"}]}'],
            r"data\.jsonl:1: qas\[0\]\.query has no @placeholder",
        ),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, task, lines, message):
    path = jsonl(tmp_path, *lines)
    with pytest.raises(DataError, match=message):
        READERS[task](path, None)


def test_conll_errors(tmp_path):
    short = write(tmp_path, "Ann NNP I-NP B-PER\nLee\n", name="short.txt")
    with pytest.raises(DataError, match=r"short\.txt:2: 1 column\(s\)"):
        READERS["conll"](short, None)
    with pytest.raises(DataError, match=r"short\.txt:1: 4 column\(s\), need a token and a tag in column 5"):
        READERS["conll"](short, None, tag_column=5)
    unknown = write(tmp_path, "-DOCSTART- -X- -X- O\n\nAnn NNP I-NP B-PER\n\nBo NNP I-NP B-PERSON\n", name="tags.txt")
    with pytest.raises(DataError, match=r"tags\.txt:5: tag 'B-PERSON' is not one of"):
        READERS["conll"](unknown, NER)


@pytest.mark.parametrize("task", sorted(READERS))
def test_missing_file(tmp_path, task):
    path = tmp_path / "nowhere" / "val.jsonl"
    with pytest.raises(DataError, match=re.escape(f"{path}: file not found")):
        READERS[task](path, None)


# ---- issue 13: bad bytes, shifted columns, columns that hold no tags ------------------------------


@pytest.mark.parametrize("task", sorted(READERS))
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path, task):
    path = tmp_path / "data.txt"
    path.write_bytes(b"Ann NNP I-NP B-PER\n" if task == "conll" else b"\n")
    path.write_bytes(path.read_bytes() + b"Caf\xe9 NNP I-NP O\n")
    with pytest.raises(DataError, match=r"data\.txt:2: not UTF-8 text \(byte 0xe9 at column 4\)"):
        READERS[task](path, None)


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"premise": "a", "hypothesis": "b", "label": "entailment"}\n')
    assert READERS["rte"](path, None)[0].fields == {"premise": "a", "hypothesis": "b"}


def test_conll_nonbreaking_space_stays_inside_the_token(tmp_path):
    path = write(tmp_path, "New\u00a0York NNP B-NP B-LOC\nis VBZ B-VP O\n")
    (example,) = READERS["conll"](path, NER)
    assert example.tokens == ["New\u00a0York", "is"] and example.tags == ["B-LOC", "O"]


def test_conll_tab_separated_tokens_may_hold_spaces(tmp_path):
    path = write(tmp_path, "New York\tNNP\tB-LOC\nis\tVBZ\tO\n\nHi \tUH\tO\n")
    first, second = READERS["conll"](path, NER)
    assert first.tokens == ["New York", "is"] and first.tags == ["B-LOC", "O"]
    assert second.tokens == ["Hi"]


@pytest.mark.parametrize(
    "text,tag_column,message",
    [
        ("Ann NNP B-NP B-PER\nNew York NNP B-NP B-LOC\n", -1, r"x\.txt:2: 5 columns where the lines before have 4"),
        ("Ann NNP B-NP B-PER\nLee NNP I-NP\n", -1, r"x\.txt:2: 3 columns where the lines before have 4"),
        ("Ann\tNNP\tB-PER\nLee\tNNP\n", -1, r"x\.txt:2: 2 columns where the lines before have 3"),
        ("Ann NNP B-NP B-PER\n", 1, r"x\.txt:1: column 1 holds 'NNP', not a tag of the IOB scheme \(O, B-X, I-X\)"),
        ("Ann NNP B-NP B-PER\n", 0, r"x\.txt:1: column 0 holds 'Ann', not a tag of the IOB scheme"),
        ("Ann NNP B-NP S-PER\n", -1, r"x\.txt:1: column -1 holds 'S-PER'"),
        ("Ann NNP B-NP I-\n", -1, r"x\.txt:1: column -1 holds 'I-'"),
    ],
)
def test_conll_column_and_tag_scheme_errors(tmp_path, text, tag_column, message):
    path = write(tmp_path, text, name="x.txt")
    with pytest.raises(DataError, match=message):
        READERS["conll"](path, None, tag_column=tag_column)


def test_error_listings_are_capped(tmp_path):
    labels = ["O", *(f"B-T{i}" for i in range(500))]
    path = write(tmp_path, "Ann NNP B-NP B-PER\n", name="x.txt")
    with pytest.raises(DataError) as info:
        READERS["conll"](path, labels)
    assert len(str(info.value)) < 300 and "489 more" in str(info.value)
    records = jsonl(tmp_path, {"premise": "a", "hypothesis": "b", "label": "maybe"})
    with pytest.raises(DataError) as info:
        READERS["rte"](records, [f"L{i}" for i in range(100)])
    assert len(str(info.value)) < 300 and "88 more" in str(info.value)


def conll_task(tmp_path, **files):
    """A generic CoNLL task over ``files`` (split -> text) in tmp_path/data/mine."""
    from promptscale.train import compose

    folder = tmp_path / "data" / "mine"
    folder.mkdir(parents=True)
    for split, text in files.items():
        (folder / f"{split}.txt").write_text(text)
    return compose(["task=conll", "task.name=mine", "task.folder=mine", f"data.dir={tmp_path / 'data'}"])


def test_generic_conll_tag_set_comes_from_every_split_the_run_uses(tmp_path):
    from promptscale.data.datamodule import TaskDataModule

    cfg = conll_task(tmp_path, train="Ann B-NP\n", valid="Lee B-LST\nmore I-LST\n", test="x O\n")
    data = TaskDataModule(cfg.task, cfg.data, seed=0)
    data.read()
    assert list(cfg.task.labels) == ["O", "B-LST", "B-NP", "I-LST"]
    assert data.eval_examples[0].tags == ["B-LST", "I-LST"]


def test_eval_limit_takes_the_first_records_whatever_the_seed(sample_data):
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.results import config_hash
    from promptscale.train import compose

    def eval_guids(seed: int, *overrides) -> list[str]:
        cfg = compose([f"data.dir={sample_data}", *overrides])
        data = TaskDataModule(cfg.task, cfg.data, seed)
        data.read()
        return [e.guid for e in data.eval_examples]

    everything = eval_guids(0)
    assert eval_guids(0, "data.eval_limit=5") == eval_guids(7, "data.eval_limit=5") == everything[:5]
    # a cap, as lm-eval's --limit: a smaller split is read whole (one limit for a sweep over tasks)
    assert eval_guids(0, f"data.eval_limit={len(everything) + 100}") == everything
    # eval_size then samples (seeded) from those first records
    assert set(eval_guids(3, "data.eval_limit=10", "data.eval_size=4")) < set(everything[:10])
    hashes = {
        config_hash(OmegaConf.to_container(compose(list(o)), resolve=True))
        for o in ([], ["data.eval_limit=5"], ["data.eval_size=5"])
    }
    assert len(hashes) == 3
