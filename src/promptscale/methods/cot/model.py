"""Chain-of-thought prompting (Wei et al. 2022; Kojima et al. 2022): nothing trains.

Zero-shot (``shots=0``, Kojima): the task's prompt, then "Let's think step by step." and a greedy
rationale; then "Therefore, the answer is" and a short greedy answer. Few-shot (Wei): the
demonstrations of ``demonstrations`` (inline) or ``demonstrations_file`` (jsonl), each the task's
prompt filled from its ``fields``, its ``rationale`` and "So the answer is <answer>.", go first
and the query's generation is read after its last "the answer is".

The answer is mapped onto the task's label set (its verbalizer words, or the choice candidates):
the first one named in the answer text, case-insensitively. An answer that names none counts
as wrong (scored as another label) and is counted in ``eval/unanswered``; every generation is in
the run's predictions file (``rationale``, ``answer``, ``answered`` in each example's record)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from promptscale.data.encoding import render_prompt
from promptscale.errors import ConfigError, check_min
from promptscale.families import family
from promptscale.methods.base import AdaptationModule
from promptscale.methods.cot.config import CoTConfig

STEP_BY_STEP = "Let's think step by step."
THEREFORE = "Therefore, the answer is"


def extract_answer(text: str, options: list[str]) -> int | None:
    """Index of the option named first in ``text`` (whole words, case-insensitive), else None."""
    found = []
    for i, option in enumerate(options):
        match = re.search(r"(?<!\w)" + re.escape(option.strip().lower()) + r"(?!\w)", text.lower())
        if match:
            found.append((match.start(), -len(option), i))
    return min(found)[2] if found else None


def load_demonstrations(cfg) -> list[dict]:
    demos = [dict(d) for d in cfg.method.demonstrations]
    if cfg.method.demonstrations_file:
        path = Path(cfg.method.demonstrations_file)
        if not path.is_file():
            raise ConfigError(f"method.demonstrations_file={path}: file not found")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    demos.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{path}:{n}: malformed JSON: {err.msg}") from None
    for n, demo in enumerate(demos, 1):
        missing = {"fields", "rationale", "answer"} - set(demo)
        if missing:
            raise ConfigError(f"chain-of-thought demonstration {n} lacks {sorted(missing)}")
    return demos


class CoT(AdaptationModule):
    schema = CoTConfig

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        if not family(cfg.model.family).generates:
            return "chain-of-thought generates text; it needs a decoder-only or encoder-decoder model"
        if cfg.task.kind == "tagging":
            return "chain-of-thought answers a question; sequence labeling is not one"
        return super().unsupported(cfg)

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        demos = load_demonstrations(cfg)
        if cfg.method.shots > len(demos):
            raise ConfigError(
                f"method.shots={cfg.method.shots} but only {len(demos)} chain-of-thought demonstrations are given"
            )
        check_min(cfg.method, "max_new_tokens", 1)

    @classmethod
    def input_files(cls, cfg) -> dict[str, str]:
        file = cfg.method.demonstrations_file
        return {"method.demonstrations_file": file} if file else {}

    def setup_method(self) -> None:
        self.backbone.requires_grad_(False)
        demos = load_demonstrations(self.cfg)[: self.hp.shots]
        self.demo_text = "".join(
            f"{render_prompt(self.task, d['fields'])} {d['rationale']} So the answer is {d['answer']}.\n\n"
            for d in demos
        )

    def generate(self, ids: list[int], max_new_tokens: int) -> str:
        """Greedy continuation of the input ``ids``."""
        tok = self.backbone.tokenizer
        input_ids = torch.tensor([ids], device=self.device)
        out = self.backbone.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        new = self.backbone.family.new_tokens(out[0], input_ids.shape[1])
        return tok.decode(new, skip_special_tokens=True)

    def answer(self, data, example) -> tuple[int | None, dict]:
        """The chosen option (None: the answer names none) and the example's predictions record extras."""
        encoder = data.encoder
        prompt = encoder.tok.decode(encoder.fit_prompt(example.fields, data.data.max_length - encoder.n_special))
        # every word of every label (several label words: any names its label), or the choices
        options, option_label = encoder.templates.scored_candidates(encoder.task, example)

        def ids(text: str) -> list[int]:  # between the family's special tokens (a decoder's <bos>, T5's </s>)
            return encoder.wrap(encoder.ids(text))

        if self.hp.shots == 0:
            rationale = self.generate(ids(f"{prompt} {STEP_BY_STEP}"), self.hp.max_new_tokens)
            final = self.generate(ids(f"{prompt} {STEP_BY_STEP}{rationale}\n{THEREFORE}"), self.hp.answer_tokens)
        else:
            rationale = self.generate(ids(self.demo_text + prompt), self.hp.max_new_tokens)
            final = rationale.split("the answer is")[-1] if "the answer is" in rationale else rationale
        named = extract_answer(final, options)
        choice = None if named is None else option_label[named]
        return choice, {"rationale": rationale, "answer": final, "answered": choice is not None}

    def validation_step(self, batch, batch_idx):
        data = self.trainer.datamodule
        preds, extras = [], []
        for i, label in zip(batch["idx"].tolist(), batch["labels"].tolist()):
            choice, record = self.answer(data, data.eval_examples[i])
            extras.append(record)
            n_options = max(2, len(data.encoder.candidates(data.eval_examples[i])))
            # unanswerable counts as wrong: score it as another label than the gold one
            preds.append(choice if choice is not None else (max(label, 0) + 1) % n_options)
        self.update_metrics(batch, torch.tensor(preds, device=self.device), extras=extras)

    def on_validation_epoch_end(self) -> None:
        # this process's examples (collected, not yet gathered across processes), summed over them
        unanswered = sum(not e["answered"] for *_, extras in self.collected for e in extras)
        self.log("eval/unanswered", float(unanswered), reduce_fx="sum", sync_dist=True)
        super().on_validation_epoch_end()
