"""Readers for the FewGLUE / SuperGLUE jsonl files and CoNLL column files.

Every reader has the signature ``reader(path, labels, **options) -> list[Example]``. ``labels``
are the task's label strings; a raw label is matched by ``str()`` (``true`` -> ``"True"``) and
stored as its index in ``labels``. Classification readers fall back to the task's usual label
list when ``labels`` is empty. A record without a label (or SuperGLUE's ``-1``) gives
``label=None``. Any problem is a :class:`DataError` naming the file and the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from promptscale.data.example import Example
from promptscale.errors import DataError, listing

BOOL_LABELS = ["False", "True"]
PLACEHOLDER = "@placeholder"
_PUNCT = "\"'.,;:!?()[]{}`"


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 text file; DataError naming the line of a byte
    that is not UTF-8 (decoded line by line, so the error can say where)."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1});"
                    " re-encode the file as UTF-8"
                ) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of a jsonl file."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def _get(obj: dict, key: str, where: str, prefix: str = "") -> Any:
    """``obj[key]``, or a DataError naming the place and the (dotted) key."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing key {prefix + key!r}")
    return obj[key]


def _text(obj: dict, key: str, where: str, prefix: str = "") -> str:
    value = _get(obj, key, where, prefix)
    if not isinstance(value, str):
        raise DataError(f"{where}: key {prefix + key!r} should be a string, got {type(value).__name__}")
    return value


def _label(raw: Any, labels: list[str], where: str) -> int | None:
    """Index of ``str(raw)`` in ``labels``; None for a missing label."""
    if raw is None or (type(raw) is int and raw == -1):
        return None
    if str(raw) not in labels:
        raise DataError(f"{where}: label {str(raw)!r} is not one of [{listing(labels)}]")
    return labels.index(str(raw))


def _guid(record: dict, lineno: int) -> str:
    return str(record["idx"]) if "idx" in record else str(lineno)


def _pairs(path: Path, labels: list[str] | None, default: list[str], keys: tuple[str, ...]) -> list[Example]:
    """Classification records whose fields are copied as they are."""
    labels = labels or default
    examples = []
    for lineno, record in iter_jsonl(path):
        where = f"{path}:{lineno}"
        fields = {key: _text(record, key, where) for key in keys}
        examples.append(Example(_guid(record, lineno), fields, _label(record.get("label"), labels, where)))
    return examples


def read_boolq(path: Path, labels: list[str] | None = None) -> list[Example]:
    """BoolQ: fields ``passage``, ``question``; labels False/True."""
    return _pairs(path, labels, BOOL_LABELS, ("passage", "question"))


def read_cb(path: Path, labels: list[str] | None = None) -> list[Example]:
    """CB: fields ``premise``, ``hypothesis``; labels entailment/contradiction/neutral."""
    return _pairs(path, labels, ["entailment", "contradiction", "neutral"], ("premise", "hypothesis"))


def read_rte(path: Path, labels: list[str] | None = None) -> list[Example]:
    """RTE: fields ``premise``, ``hypothesis``; labels entailment/not_entailment."""
    return _pairs(path, labels, ["entailment", "not_entailment"], ("premise", "hypothesis"))


def read_wic(path: Path, labels: list[str] | None = None) -> list[Example]:
    """WiC: fields ``word``, ``sentence1``, ``sentence2``, and ``word1``: the word as written in
    sentence1 (its ``start1``/``end1`` span; ``word`` where the record has none); labels False/True."""
    examples = _pairs(path, labels, BOOL_LABELS, ("word", "sentence1", "sentence2"))
    for example, (_, record) in zip(examples, iter_jsonl(path)):
        start, end = record.get("start1"), record.get("end1")
        spanned = isinstance(start, int) and isinstance(end, int) and example.fields["sentence1"][start:end]
        example.fields["word1"] = spanned or example.fields["word"]
    return examples


def _bare(word: str) -> str:
    return word.strip(_PUNCT).lower()


def read_wsc(path: Path, labels: list[str] | None = None) -> list[Example]:
    """WSC: fields ``text`` (pronoun marked ``*it*``), ``span1`` (candidate referent), ``span2``
    (pronoun); labels False/True. A pronoun index off by one word is corrected, as PET does.
    ``passage`` and ``span2_index`` are the record's own (uncorrected), for patterns that mark the
    pronoun themselves as lm-evaluation-harness does."""
    labels = labels or BOOL_LABELS
    examples = []
    for lineno, record in iter_jsonl(path):
        where = f"{path}:{lineno}"
        text = _text(record, "text", where)
        target = _get(record, "target", where)
        span1 = _text(target, "span1_text", where, "target.")
        span2 = _text(target, "span2_text", where, "target.")
        index = _get(target, "span2_index", where, "target.")
        words, pronoun = text.split(), span2.split()
        if not pronoun or not isinstance(index, int):
            raise DataError(f"{where}: target.span2_text / target.span2_index are not a word and an index")
        first = _bare(pronoun[0])
        found = [i for i in (index, index - 1, index + 1) if 0 <= i < len(words) and _bare(words[i]) == first]
        if not found:
            at = repr(words[index]) if 0 <= index < len(words) else "nothing"
            raise DataError(f"{where}: target.span2_index={index} points at {at}, not {pronoun[0]!r}")
        start, end = found[0], min(found[0] + len(pronoun), len(words)) - 1
        lead = words[start].lower().index(first)
        words[start] = words[start][:lead] + "*" + words[start][lead:]
        last = _bare(words[end])
        tail = words[end].lower().rindex(last) + len(last) if last else len(words[end])
        words[end] = words[end][:tail] + "*" + words[end][tail:]
        fields = {"text": " ".join(words), "span1": span1, "span2": span2, "passage": text, "span2_index": str(index)}
        examples.append(Example(_guid(record, lineno), fields, _label(record.get("label"), labels, where)))
    return examples


def clean_multirc(text: str) -> str:
    """MultiRC passage as plain text: ``<br>`` -> newline, ``<b>Sent 1: </b>`` and other tags dropped."""
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)
    text = re.sub(r"<b>\s*Sent\s+\d+:\s*</b>", "", text, flags=re.IGNORECASE)
    text = re.sub(r"<[^>]+>", "", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def read_multirc(path: Path, labels: list[str] | None = None) -> list[Example]:
    """MultiRC: one example per answer option, fields ``passage``, ``question``, ``answer``;
    labels False/True (0/1 in the file); ``group`` = "passage idx-question idx"."""
    labels = labels or BOOL_LABELS
    examples = []
    for lineno, record in iter_jsonl(path):
        where = f"{path}:{lineno}"
        passage = _get(record, "passage", where)
        text = clean_multirc(_text(passage, "text", where, "passage."))
        pid = record.get("idx", lineno)
        for qi, question in enumerate(_get(passage, "questions", where, "passage.")):
            qkey = f"passage.questions[{qi}]."
            qtext = _text(question, "question", where, qkey)
            group = f"{pid}-{question.get('idx', qi)}"
            for ai, answer in enumerate(_get(question, "answers", where, qkey)):
                atext = _text(answer, "text", where, f"{qkey}answers[{ai}].")
                raw = answer.get("label")
                if type(raw) is int and raw in (0, 1):
                    raw = bool(raw)
                examples.append(
                    Example(
                        guid=str(answer.get("idx", f"{group}-{ai}")),
                        fields={"passage": text, "question": qtext, "answer": atext},
                        label=_label(raw, labels, where),
                        group=group,
                    )
                )
    return examples


def read_copa(path: Path, labels: list[str] | None = None) -> list[Example]:
    """COPA: fields ``premise``, ``question`` ("cause"/"effect"); candidates choice1, choice2;
    ``label`` is the index of the right choice (``labels`` is not used)."""
    examples = []
    for lineno, record in iter_jsonl(path):
        where = f"{path}:{lineno}"
        fields = {"premise": _text(record, "premise", where), "question": _text(record, "question", where)}
        if fields["question"] not in ("cause", "effect"):
            raise DataError(f"{where}: question {fields['question']!r} is not 'cause' or 'effect'")
        candidates = [_text(record, "choice1", where), _text(record, "choice2", where)]
        raw = record.get("label")
        label = None if raw is None or (type(raw) is int and raw == -1) else raw
        if label is not None and (type(label) is not int or label not in (0, 1)):
            raise DataError(f"{where}: label {raw!r} is not one of [0, 1]")
        gold = None if label is None else [label]
        examples.append(Example(_guid(record, lineno), fields, label, candidates=candidates, gold=gold))
    return examples


def record_passage(text: str) -> str:
    """ReCoRD passage with its highlights as readable lines ("@highlight\\n" -> "- ")."""
    return text.replace("@highlight\n", "- ")


def read_record(path: Path, labels: list[str] | None = None) -> list[Example]:
    """ReCoRD: one example per query; fields ``passage``, ``query``, ``query_before`` (text before
    @placeholder, right-stripped) and ``query_after`` (the rest, as it is); candidates are the
    distinct entity texts (inclusive ``end``) in order of appearance; ``answers`` the gold texts,
    ``gold`` the candidate indices equal to one, ``label`` the first (None when none matches)."""
    examples = []
    for lineno, record in iter_jsonl(path):
        where = f"{path}:{lineno}"
        passage = _get(record, "passage", where)
        text = _text(passage, "text", where, "passage.")
        spans = []
        for ei, entity in enumerate(_get(passage, "entities", where, "passage.")):
            start = _get(entity, "start", where, f"passage.entities[{ei}].")
            end = _get(entity, "end", where, f"passage.entities[{ei}].")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end < len(text)):
                raise DataError(f"{where}: entity span [{start}, {end}] is outside the passage")
            spans.append((start, end))
        candidates = list(dict.fromkeys(text[s : e + 1] for s, e in sorted(spans)))
        for qi, qa in enumerate(_get(record, "qas", where)):
            query = _text(qa, "query", where, f"qas[{qi}].")
            if PLACEHOLDER not in query:
                raise DataError(f"{where}: qas[{qi}].query has no {PLACEHOLDER}")
            before, after = query.split(PLACEHOLDER, 1)
            fields = {
                "passage": record_passage(text),
                "query": query,
                "query_before": before.rstrip(),
                "query_after": after,
            }
            answers = gold = label = None
            if qa.get("answers") is not None:
                answers = list(dict.fromkeys(_text(a, "text", where, f"qas[{qi}].answers[].") for a in qa["answers"]))
                gold = [i for i, c in enumerate(candidates) if c in answers]
                label = gold[0] if gold else None
            guid = str(qa.get("idx", f"{_guid(record, lineno)}-{qi}"))
            examples.append(Example(guid, fields, label, candidates=candidates, gold=gold, answers=answers))
    return examples


TAG_PREFIXES = ("B-", "I-")


def conll_columns(line: str) -> list[str]:
    """The columns of one CoNLL line: tab-separated if it has a tab (tokens may then hold spaces),
    else separated by runs of ASCII spaces. A non-breaking space is part of a token, never a separator
    (``str.split()`` would cut "New\xa0York" in two and shift every column after it)."""
    line = line.rstrip("\r\n")
    if "\t" in line:
        return [col.strip(" ") for col in line.split("\t")]
    return [col for col in line.split(" ") if col]


def read_conll(path: Path, labels: list[str] | None = None, tag_column: int = -1) -> list[Example]:
    """CoNLL columns: token in column 0, tag in ``tag_column``; blank lines end sentences,
    ``-DOCSTART-`` lines are skipped; IOB1 tags become IOB2. Every line has as many columns as
    the file's first one, and every tag is ``O``, ``B-X`` or ``I-X``; ``labels`` (IOB2 tags) are
    checked when given. guid = the line number of the sentence's first token."""
    path = Path(path)
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    width = None  # the file's column count, from its first token line

    def flush() -> None:
        if tokens:
            examples.append(Example(str(first), {}, tokens=list(tokens), tags=list(tags)))
            tokens.clear()
            tags.clear()

    for lineno, line in iter_lines(path):
        cols = conll_columns(line)
        if not cols or not "".join(cols).strip():
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        where = f"{path}:{lineno}"
        if len(cols) < 2 or not -len(cols) <= tag_column < len(cols):
            raise DataError(f"{where}: {len(cols)} column(s), need a token and a tag in column {tag_column}")
        if width is None:
            width = len(cols)
        elif len(cols) != width:
            raise DataError(
                f"{where}: {len(cols)} columns where the lines before have {width} (a missing column, or a"
                " token with a space: separate columns with tabs to keep spaces inside a token)"
            )
        tag = cols[tag_column]
        if tag != "O" and not (tag.startswith(TAG_PREFIXES) and len(tag) > 2):
            raise DataError(
                f"{where}: column {tag_column} holds {tag!r}, not a tag of the IOB scheme (O, B-X, I-X);"
                " set task.reader_options.tag_column to the entity column"
            )
        if tag.startswith("I-"):
            prev = tags[-1] if tags else "O"
            if prev == "O" or prev[2:] != tag[2:]:
                tag = "B-" + tag[2:]
        if labels and tag not in labels:
            raise DataError(f"{where}: tag {tag!r} is not one of [{listing(labels)}]")
        if not tokens:
            first = lineno
        tokens.append(cols[0])
        tags.append(tag)
    flush()
    return examples


READERS: dict[str, Callable[..., list[Example]]] = {
    "boolq": read_boolq,
    "cb": read_cb,
    "copa": read_copa,
    "rte": read_rte,
    "wic": read_wic,
    "wsc": read_wsc,
    "multirc": read_multirc,
    "record": read_record,
    "conll": read_conll,
}
