"""Turning examples into token ids (cached) and batches (per family and head).

Every classification and choice task is read the same way: candidates (the label verbalizers,
or the task's own candidates) are scored in an answer slot that follows the prompt:
the [MASK]s of an encoder, the continuation of a decoder, the target of an encoder-decoder.

A task's template, verbalizer words, answer delimiter and per-choice text are Jinja (the
convention of lm-evaluation-harness and promptsource), rendered in a sandbox with strict
undefined variables. Markers ([P], [MASK]) are read from the template's own text only: a record's
text is never markup, whatever it holds.

Why one module of this size: templates, answer slots, truncation and collation are one contract
(the positions the collator writes are the ones the encoder computed), kept side by side.
"""

from __future__ import annotations

import re
import threading
import zlib
from functools import cache

import jinja2
import jinja2.meta
import torch
from jinja2.sandbox import SandboxedEnvironment
from omegaconf import ListConfig

from promptscale.data.example import Example
from promptscale.errors import ConfigError
from promptscale.families import family

IGNORE = -100
# a template's "[P]" becomes VIRTUAL_ID: a position whose embedding a method supplies (P-Tuning)
VIRTUAL_TOKEN = "[P]"
VIRTUAL_ID = -1
# a masked-LM pattern's "[MASK]" marks where the answer slot sits inside it (PET's cloze patterns);
# without it the slot follows the prompt
SLOT_TOKEN = "[MASK]"
SLOT_ID = -2
MARKERS = re.compile(r"(\[P\]|\[MASK\])")
MARKER_IDS = {VIRTUAL_TOKEN: VIRTUAL_ID, SLOT_TOKEN: SLOT_ID}
TRUNCATION_SIDES = ("left", "right")
# "{premise}": a str.format field, the template syntax before Jinja (Jinja would print it as text)
FORMAT_FIELD = re.compile(r"(?<!\{)\{(\w+)\}(?!\})")

# Which rendered chunks are a template's own text and which are values: Jinja yields a template's
# output chunk by chunk (literal text, then each {{ expression }}), and calls `finalize` on an
# expression's value right before yielding it. Jinja has no API that labels chunks, so we note the
# values `finalize` sees (per thread) and match them to the chunks.
_seen = threading.local()


def _finalize(value):
    if hasattr(_seen, "values"):
        _seen.values.append(value)
    return value


_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, finalize=_finalize
)


class FieldText(str):
    """A record's field value that remembers its name, so that ``{{ passage }}`` in the output is
    known to be the field (truncation cuts it); any filter or slice returns a plain str."""

    field: str

    def __new__(cls, value: str, field: str):
        obj = super().__new__(cls, value)
        obj.field = field
        return obj


@cache
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def compile_template(source: str, where: str) -> jinja2.Template:
    """A template compiled once (cached by its source); a syntax error is one line naming ``where``."""
    try:
        return _compile(source)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{where}: Jinja syntax error: {e.message} in {source!r}") from None


def template_fields(source: str) -> set[str]:
    """The variables a template reads (besides the ones it sets itself)."""
    try:
        return jinja2.meta.find_undeclared_variables(_ENV.parse(source))
    except jinja2.TemplateSyntaxError:
        return set()


def render_chunks(template: jinja2.Template, values: dict) -> list[tuple[str, str | None, bool]]:
    """``template`` rendered as (text, field name or None, literal?) chunks, in order. A literal
    chunk is the template's own text (where markers are read); a value chunk is the output of an
    expression (field name set when it is a field output as it is)."""
    _seen.values = []
    chunks = []
    try:
        for text in template.generate(**values):
            seen, _seen.values = _seen.values, []
            if not seen:
                chunks.append((text, None, True))
            elif len(seen) == 1 and isinstance(seen[0], FieldText) and text == str(seen[0]):
                chunks.append((text, seen[0].field, False))
            else:  # a computed value, or a block mixing values and text: data either way
                chunks.append((text, None, False))
    finally:
        del _seen.values
    return chunks


def _where(task) -> str:
    pattern = task.get("pattern_name")
    return f"task {task.name}" + (f", pattern {pattern}" if pattern is not None else "")


def label_words(value) -> list[str]:
    """A verbalizer entry's words: one word, or a list of them (OpenPrompt's several label words
    per class; a label's score is then the mean of its words' scores). Numbers are words too
    (a YAML ``1`` reads as the text "1")."""
    return [str(w) for w in value] if isinstance(value, ListConfig | list | tuple) else [str(value)]


class TaskTemplates:
    """The task's Jinja templates, compiled once: the prompt, the delimiter before the answer, the
    text of each choice (``choice`` is the verbalizer word or the candidate) and the verbalizer."""

    def __init__(self, task):
        where = _where(task)
        self.where = where
        self.prompt = compile_template(task.template, f"{where}: template")
        self.delimiter = compile_template(task.delimiter, f"{where}: delimiter")
        self.choice = compile_template(task.choice, f"{where}: choice")
        words = {label: label_words(value) for label, value in task.verbalizer.items()}
        # label -> its words' templates (several: OpenPrompt's label words; the first answers demonstrations)
        self.verbalizer = {
            label: [compile_template(w, f"{where}: verbalizer[{label}]") for w in ws] for label, ws in words.items()
        }
        self.sources = {
            "template": task.template,
            "delimiter": task.delimiter,
            "choice": task.choice,
            **{
                f"verbalizer[{label}]" + (f"[{i}]" if len(ws) > 1 else ""): w
                for label, ws in words.items()
                for i, w in enumerate(ws)
            },
        }
        for key, text in self.sources.items():
            old = FORMAT_FIELD.search(text)
            if old:
                raise ConfigError(
                    f"{where}: {key} has {old.group(0)}, str.format syntax; templates are Jinja: {{{{ {old.group(1)} }}}}"
                )

    @staticmethod
    def values(fields: dict[str, str]) -> dict:
        return {name: FieldText(value, name) if isinstance(value, str) else value for name, value in fields.items()}

    def prompt_chunks(self, fields: dict[str, str]) -> list[tuple[str, str | None, bool]]:
        return render_chunks(self.prompt, self.values(fields))

    def prompt_text(self, fields: dict[str, str]) -> str:
        return "".join(text for text, _, _ in self.prompt_chunks(fields))

    def candidates(self, task, ex: Example) -> list[str]:
        """Each label's (its first word's) or choice's text, delimiter not included: the answers a
        demonstration or a generated answer is written with."""
        values = self.values(ex.fields)
        if task.kind == "classification":
            words = [self.verbalizer[label][0].render(values) for label in task.labels]
        else:
            words = list(ex.candidates)
        return [self.choice.render({**values, "choice": word}) for word in words]

    def scored_candidates(self, task, ex: Example) -> tuple[list[str], list[int]]:
        """Every text the model scores (each word of each label, or each choice) and the label or
        choice index each one counts for."""
        if task.kind != "classification":
            texts = self.candidates(task, ex)
            return texts, list(range(len(texts)))
        values = self.values(ex.fields)
        pairs = [(w.render(values), i) for i, label in enumerate(task.labels) for w in self.verbalizer[label]]
        return [self.choice.render({**values, "choice": word}) for word, _ in pairs], [i for _, i in pairs]

    def delimiter_text(self, fields: dict[str, str]) -> str:
        return self.delimiter.render(self.values(fields))


def render_prompt(task, fields: dict[str, str]) -> str:
    """The task's prompt for ``fields`` as plain text (markers left as written)."""
    return TaskTemplates(task).prompt_text(dict(fields))


class TaskEncoder:
    """Tokenizes one example; truncation shortens the task's long fields (``task.truncate``, in
    order, at ``truncation_side``), never the answer slot."""

    def __init__(self, task, tokenizer, family_name: str, max_length: int, truncation_side: str = "right"):
        self.task, self.tok, self.family, self.max_length = task, tokenizer, family(family_name), max_length
        self.side = truncation_side
        self.templates = TaskTemplates(task)
        self.prefix, self.suffix = self.family.frame(tokenizer)
        self.n_special = len(self.prefix) + len(self.suffix)

    def wrap(self, ids: list[int]) -> list[int]:
        """``ids`` between the family's special tokens (``Family.frame``)."""
        return [*self.prefix, *ids, *self.suffix]

    def ids(self, text: str) -> list[int]:
        # special-token text ("[MASK]", "</s>") in a record or a template is text, never a control token
        return self.tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def candidates(self, ex: Example) -> list[str]:
        return self.templates.candidates(self.task, ex)

    def demonstration(self, ex: Example) -> str:
        """An answered example as text: prompt, delimiter, gold candidate (ICL's demonstrations)."""
        return (
            self.templates.prompt_text(ex.fields)
            + self.templates.delimiter_text(ex.fields)
            + self.candidates(ex)[ex.label]
        )

    def _pieces(self, fields: dict[str, str]) -> list:
        """The rendered prompt as marker ids (from the template's own text) and, between them,
        pieces of text: lists of (text, field name or None)."""
        items: list = []
        current: list[tuple[str, str | None]] = []
        for text, field, literal in self.templates.prompt_chunks(fields):
            parts = MARKERS.split(text) if literal else [text]
            for i, part in enumerate(parts):
                if i % 2:  # the split's captured markers sit at odd positions
                    items += [current, MARKER_IDS[part]]
                    current = []
                elif part:
                    current.append((part, field))
        items.append(current)
        return items

    def _joint_ids(self, items: list) -> list[int]:
        """Each piece tokenized as one string (the spaces around a marker are word boundaries for
        the text after it, never tokens of their own)."""
        ids: list[int] = []
        for item in items:
            if isinstance(item, int):
                ids.append(item)
            else:
                piece = "".join(text for text, _ in item)
                if piece.strip():
                    ids += self.ids(piece.rstrip())
        return ids

    def prompt_ids(self, fields: dict[str, str]) -> list[int]:
        """Token ids of the filled template, [P] as VIRTUAL_ID and [MASK] as SLOT_ID."""
        return self._joint_ids(self._pieces(fields))

    def _fit(self, items: list, budget: int) -> list[int]:
        ids = self._joint_ids(items)
        if len(ids) <= budget:
            return ids
        # Too long: cut token ids, never text. The pieces are split around the outputs of the fields
        # to truncate (with the whitespace before each), every part is tokenized on its own, and
        # the fields' ids lose exactly the excess: one pass, whatever the tokenizer does with the
        # bytes of a cut character.
        cuttable = set(self.task.truncate)
        parts: list[list] = []  # [ids, field name or None]
        for item in items:
            if isinstance(item, int):
                parts.append([[item], None])
                continue
            segments: list[tuple[str, str | None]] = []
            for text, field in item:
                field = field if field in cuttable else None
                if field is not None and segments and segments[-1][1] is None:
                    before = segments[-1][0].rstrip()
                    text = segments[-1][0][len(before) :] + text
                    segments[-1] = (before, None)
                if field is None and segments and segments[-1][1] is None:
                    segments[-1] = (segments[-1][0] + text, None)
                else:
                    segments.append((text, field))
            if not "".join(text for text, _ in segments).strip():
                continue
            segments[-1] = (segments[-1][0].rstrip(), segments[-1][1])
            parts += [[self.ids(text), field] for text, field in segments if text.strip()]
        excess = sum(len(p[0]) for p in parts) - budget
        for name in self.task.truncate:
            for part in parts:
                if excess <= 0:
                    break
                if part[1] == name:
                    cut = min(excess, len(part[0]))
                    part[0] = part[0][cut:] if self.side == "left" else part[0][: len(part[0]) - cut]
                    excess -= cut
        ids = [i for p in parts for i in p[0]]
        # last resort: keep the end of the prompt, which holds the cue right before the slot
        return ids[-budget:] if budget > 0 else []

    def fit_prompt(self, fields: dict[str, str], budget: int) -> list[int]:
        """The prompt's ids within ``budget`` positions."""
        return self._fit(self._pieces(fields), budget)

    def encode(self, ex: Example, idx: int) -> dict:
        if self.task.kind == "tagging":
            return self.encode_tagging(ex, idx)
        delimiter = self.templates.delimiter_text(ex.fields)
        texts, of_label = self.templates.scored_candidates(self.task, ex)
        cand_ids = [self.ids(delimiter + c) or [self.tok.unk_token_id] for c in texts]
        # the slot must keep room for the longest candidate, but never take more than half the input
        cap = self.max_length // 2
        cand_ids = [c[:cap] for c in cand_ids]
        slot = 0 if self.family.seq2seq else max(len(c) for c in cand_ids)  # T5: the answer is the target
        items = self._pieces(ex.fields)
        # a [MASK] marker takes one position of the budget and becomes the slot
        marker = int(SLOT_ID in items)
        prompt = self._fit(items, self.max_length - self.n_special - slot + marker)
        return {
            "idx": idx,
            "prompt_ids": prompt,
            "cand_ids": cand_ids,
            "label": -1 if ex.label is None else ex.label,
            # several words of a label: which label each candidate counts for (one word each: implied)
            **({"cand_label": of_label} if len(set(of_label)) < len(of_label) else {}),
        }

    def encode_tagging(self, ex: Example, idx: int) -> dict:
        label_id = {tag: i for i, tag in enumerate(self.task.labels)}
        budget = self.max_length - self.n_special
        ids: list[int] = []
        word_pos: list[int] = []
        for i, word in enumerate(ex.tokens):
            pieces = self.ids((" " if i else "") + word) or [self.tok.unk_token_id]
            if len(ids) + len(pieces) > budget:
                break  # words past the budget are predicted "O" at evaluation
            word_pos.append(len(ids))
            ids.extend(pieces)
        return {"idx": idx, "input_ids": ids, "word_pos": word_pos, "tag_ids": [label_id[t] for t in ex.tags]}


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max((len(s) for s in seqs), default=0)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long).reshape(len(seqs), width)


class Collator:
    """Builds padded batches for one family and head (dynamic padding to the longest row), each
    row between the encoder's special tokens."""

    def __init__(self, encoder: TaskEncoder, head: str, examples: list[Example]):
        self.task, self.tok, self.family, self.wrap = encoder.task, encoder.tok, encoder.family, encoder.wrap
        self.head, self.examples = head, examples
        self.start = len(encoder.prefix)  # where the input's own tokens begin in a row
        self.pad = self.tok.pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        if self.task.kind == "tagging":
            batch = self.tagging(rows)
        elif self.head == "cls":
            batch = self.cls(rows)
        elif self.family.seq2seq:
            batch = self.seq2seq(rows)
        else:
            batch = self.slots(rows)
        batch["idx"] = torch.tensor([r["idx"] for r in rows])
        if self.task.kind != "tagging":  # what MultiRC's and ReCoRD's metrics read besides labels
            examples = [self.examples[r["idx"]] for r in rows]
            batch["groups"] = torch.tensor([zlib.crc32(e.group.encode()) if e.group else -1 for e in examples])
            batch["answers"] = [e.answers or [] for e in examples]
            batch["cand_texts"] = [e.candidates or [] for e in examples]
        return batch

    def _inputs(self, seqs: list[list[int]]) -> dict:
        return {
            "input_ids": _pad(seqs, self.pad),
            "attention_mask": _pad([[1] * len(s) for s in seqs], 0),
        }

    def _labels(self, rows) -> torch.Tensor:
        return torch.tensor([r["label"] for r in rows], dtype=torch.long)

    def _candidates(self, rows, row_of, width: int) -> dict:
        """cand_row[b, c]: the row scoring candidate c of example b (-1: none);
        cand_tokens/cand_mask[b, c, t]: its t-th token, read at slot t of that row."""
        n_cands = max(len(r["cand_ids"]) for r in rows)
        cand_row = torch.full((len(rows), n_cands), -1, dtype=torch.long)
        tokens = torch.zeros((len(rows), n_cands, width), dtype=torch.long)
        mask = torch.zeros((len(rows), n_cands, width))
        for b, r in enumerate(rows):
            for c, ids in enumerate(r["cand_ids"]):
                cand_row[b, c] = row_of(b, c)
                tokens[b, c, : len(ids)] = torch.tensor(ids)
                mask[b, c, : len(ids)] = 1
        batch = {"cand_row": cand_row, "cand_tokens": tokens, "cand_mask": mask}
        if any("cand_label" in r for r in rows):  # cand_label[b, c]: the label candidate c counts for
            batch["cand_label"] = _pad([r["cand_label"] for r in rows], -1)
        return batch

    def slots(self, rows: list[dict]) -> dict:
        """Encoders and decoders: score candidates at slot positions of the input rows.

        If every candidate is one token, one row per example serves all its candidates
        (one [MASK], or the prompt's last position); otherwise one row per candidate."""
        single = all(len(c) == 1 for r in rows for c in r["cand_ids"])
        mask_id = self.tok.mask_token_id
        seqs, slot_pos, row_ids = [], [], {}
        for b, r in enumerate(rows):
            prompt = r["prompt_ids"]
            for c, cand in enumerate([[0]] if single else r["cand_ids"]):
                if self.family.cloze:  # the [MASK]s sit at the pattern's slot, else at the end
                    at = prompt.index(SLOT_ID) if SLOT_ID in prompt else len(prompt)
                    seq = self.wrap(prompt[:at] + [mask_id] * len(cand) + prompt[at + 1 :])
                    pos = list(range(self.start + at, self.start + at + len(cand)))
                else:  # the logit at position i predicts token i + 1
                    seq = self.wrap(prompt + cand[:-1])
                    end = self.start + len(prompt) - 1
                    pos = list(range(end, end + len(cand)))
                row_ids[b, c] = len(seqs)
                seqs.append(seq)
                slot_pos.append(pos)
        width = max(len(p) for p in slot_pos)
        batch = self._inputs(seqs)
        batch["slot_pos"] = _pad(slot_pos, 0)
        batch.update(
            self._candidates(rows, (lambda b, c: row_ids[b, 0]) if single else (lambda b, c: row_ids[b, c]), width)
        )
        batch["labels"] = self._labels(rows)
        return batch

    def seq2seq(self, rows: list[dict]) -> dict:
        """Encoder-decoders: encode each prompt once; decode every candidate (+ </s>) as a target."""
        start = self.tok.pad_token_id  # T5's decoder_start_token_id
        eos = self.tok.eos_token_id
        batch = self._inputs([self.wrap(r["prompt_ids"]) for r in rows])
        dec_in, dec_example, row_ids, targets = [], [], {}, []
        for b, r in enumerate(rows):
            for c, cand in enumerate(r["cand_ids"]):
                row_ids[b, c] = len(dec_in)
                dec_in.append([start, *cand])
                targets.append([*cand, eos])
                dec_example.append(b)
        batch["decoder_input_ids"] = _pad(dec_in, self.pad)
        batch["decoder_attention_mask"] = _pad([[1] * len(s) for s in dec_in], 0)
        batch["decoder_example"] = torch.tensor(dec_example)
        # the scored targets carry the </s>
        scored = [dict(r, cand_ids=[[*c, eos] for c in r["cand_ids"]]) for r in rows]
        batch.update(self._candidates(scored, lambda b, c: row_ids[b, c], max(len(t) for t in targets)))
        batch["labels"] = self._labels(rows)
        return batch

    def cls(self, rows: list[dict]) -> dict:
        """A linear head reads [CLS] (encoders) or the last prompt token (decoders)."""
        mask_id = self.tok.mask_token_id
        seqs = [self.wrap([mask_id if i == SLOT_ID else i for i in r["prompt_ids"]]) for r in rows]
        batch = self._inputs(seqs)
        batch["cls_pos"] = torch.tensor([len(s) - 1 if self.family.reads_last else 0 for s in seqs])
        batch["labels"] = self._labels(rows)
        return batch

    def tagging(self, rows: list[dict]) -> dict:
        """Token classification: the first sub-token of each word carries its tag."""
        first = self.start
        seqs = [self.wrap(r["input_ids"]) for r in rows]
        batch = self._inputs(seqs)
        labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
        word_pos = torch.full((len(rows), max(len(r["tag_ids"]) for r in rows)), -1, dtype=torch.long)
        gold = torch.full(word_pos.shape, IGNORE, dtype=torch.long)
        for b, r in enumerate(rows):
            for w, pos in enumerate(r["word_pos"]):
                labels[b, first + pos] = r["tag_ids"][w]
                word_pos[b, w] = first + pos
            gold[b, : len(r["tag_ids"])] = torch.tensor(r["tag_ids"])
        batch.update(tag_labels=labels, word_pos=word_pos, gold_tags=gold)
        return batch


def check_template(task, example: Example, source: str) -> None:
    """Every template reads only fields the records have, and renders the first record; one line
    naming the task, the pattern and the field otherwise (before any model loads)."""
    templates = TaskTemplates(task)
    fields = set(example.fields)
    have = f"the records of {source} have {sorted(fields)}"
    for key, text in templates.sources.items():
        missing = sorted(template_fields(text) - fields - ({"choice"} if key == "choice" else set()))
        if missing:
            raise ConfigError(f"{templates.where}: {key} reads field(s) {missing}; {have}")
    unknown = [name for name in task.truncate if name not in fields]
    if unknown:
        raise ConfigError(f"{templates.where}: task.truncate names field(s) {unknown}; {have}")
    try:
        templates.prompt_text(example.fields)
        templates.delimiter_text(example.fields)
        if task.kind != "classification" or all(label in templates.verbalizer for label in task.labels):
            templates.scored_candidates(task, example)
    except (jinja2.TemplateError, TypeError, ValueError) as e:
        raise ConfigError(f"{templates.where}: rendering record {example.guid} of {source} fails: {e}") from None
