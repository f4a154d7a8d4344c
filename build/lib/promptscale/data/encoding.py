"""Turning examples into token ids (cached) and batches (per family and head).

Every classification and choice task is read the same way: candidates (the label verbalizers,
or the task's own candidates) are scored in an answer slot that follows the prompt:
the [MASK]s of an encoder, the continuation of a decoder, the target of an encoder-decoder.
"""

from __future__ import annotations

import re
import string
import zlib

import torch

from promptscale.data.example import Example
from promptscale.errors import ConfigError

IGNORE = -100
# a template's "[P]" becomes VIRTUAL_ID: a position whose embedding a method supplies (P-Tuning)
VIRTUAL_TOKEN = "[P]"
VIRTUAL_ID = -1
# a masked-LM pattern's "[MASK]" marks where the answer slot sits inside it (PET's cloze patterns);
# without it the slot follows the prompt
SLOT_TOKEN = "[MASK]"
SLOT_ID = -2
MARKERS = re.compile(r"(\[P\]|\[MASK\])")


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class TaskEncoder:
    """Tokenizes one example; truncation shortens the task's long fields, never the answer slot."""

    def __init__(self, task, tokenizer, family: str, max_length: int):
        self.task, self.tok, self.family, self.max_length = task, tokenizer, family, max_length
        # specials around the prompt: [CLS] .. [SEP] for encoders, </s> for T5's encoder input
        self.n_special = {"encoder": 2, "encdec": 1, "decoder": 0}[family]

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def candidates(self, ex: Example) -> list[str]:
        if self.task.kind == "classification":
            return [self.task.verbalizer[label] for label in self.task.labels]
        suffix = self.task.candidate_suffix.format(**ex.fields)
        return [c + suffix for c in ex.candidates]

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of a filled template, [P] as VIRTUAL_ID and [MASK] as SLOT_ID (the spaces
        around a marker are word boundaries for the text after it, never tokens of their own)."""
        ids: list[int] = []
        for piece in MARKERS.split(text):
            if piece in (VIRTUAL_TOKEN, SLOT_TOKEN):
                ids.append(VIRTUAL_ID if piece == VIRTUAL_TOKEN else SLOT_ID)
            elif piece.strip():
                ids += self.ids(piece.rstrip())
        return ids

    def fit_prompt(self, fields: dict[str, str], budget: int) -> list[int]:
        fields = dict(fields)
        ids = self.prompt_ids(self.task.template.format(**fields))
        for name in self.task.truncate:
            while len(ids) > budget and fields[name]:
                field_ids = self.ids(fields[name])
                keep = max(0, min(len(field_ids) - 1, len(field_ids) - (len(ids) - budget)))
                fields[name] = self.tok.decode(field_ids[:keep]).strip()
                ids = self.prompt_ids(self.task.template.format(**fields))
        # last resort: keep the end of the prompt, which holds the cue right before the slot
        return ids[-budget:] if budget > 0 else []

    def encode(self, ex: Example, idx: int) -> dict:
        if self.task.kind == "tagging":
            return self.encode_tagging(ex, idx)
        cand_ids = [self.ids(" " + c) or [self.tok.unk_token_id] for c in self.candidates(ex)]
        # the slot must keep room for the longest candidate, but never take more than half the input
        cap = self.max_length // 2
        cand_ids = [c[:cap] for c in cand_ids]
        slot = 0 if self.family == "encdec" else max(len(c) for c in cand_ids)
        # a [MASK] marker takes one position of the budget and becomes the slot
        marker = int(SLOT_TOKEN in self.task.template)
        prompt = self.fit_prompt(ex.fields, self.max_length - self.n_special - slot + marker)
        return {
            "idx": idx,
            "prompt_ids": prompt,
            "cand_ids": cand_ids,
            "label": -1 if ex.label is None else ex.label,
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
    """Builds padded batches for one family and head (dynamic padding to the longest row)."""

    def __init__(self, task, tokenizer, family: str, head: str, examples: list[Example]):
        self.task, self.tok, self.family, self.head, self.examples = task, tokenizer, family, head, examples
        self.pad = tokenizer.pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        if self.task.kind == "tagging":
            batch = self.tagging(rows)
        elif self.head == "cls":
            batch = self.cls(rows)
        elif self.family == "encdec":
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

    def wrap(self, ids: list[int]) -> list[int]:
        if self.family == "encoder":
            return [self.tok.cls_token_id, *ids, self.tok.sep_token_id]
        if self.family == "encdec":
            return [*ids, self.tok.eos_token_id]
        return ids

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
        return {"cand_row": cand_row, "cand_tokens": tokens, "cand_mask": mask}

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
                if self.family == "encoder":  # the [MASK]s sit at the pattern's slot, else at the end
                    at = prompt.index(SLOT_ID) if SLOT_ID in prompt else len(prompt)
                    seq = self.wrap(prompt[:at] + [mask_id] * len(cand) + prompt[at + 1 :])
                    pos = list(range(1 + at, 1 + at + len(cand)))
                else:  # the logit at position i predicts token i + 1
                    seq = prompt + cand[:-1]
                    pos = list(range(len(prompt) - 1, len(prompt) - 1 + len(cand)))
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
        batch["cls_pos"] = torch.tensor([0 if self.family == "encoder" else len(s) - 1 for s in seqs])
        batch["labels"] = self._labels(rows)
        return batch

    def tagging(self, rows: list[dict]) -> dict:
        """Token classification: the first sub-token of each word carries its tag."""
        first = 1 if self.family == "encoder" else 0
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
    missing = [f for f in template_fields(task.template + task.candidate_suffix) if f not in example.fields]
    if missing:
        raise ConfigError(f"task {task.name}: template field(s) {missing} not in the records of {source}")
