"""In-context learning (zero-, one- and few-shot): nothing trains; ``shots`` demonstrations from
the train split (seeded; random or class-balanced, in seeded order), each the task's prompt
followed by its answer, go before every query, and the candidates are rank-classified as for
every other method.

The demonstration block is the same for every query, so on decoder-only models it is encoded
once and its key/value cache handed to every batch (``cache_demos``); without the cache the
block's embeddings are prepended to each input, which gives the same scores. Encoder-decoders
read the block in the encoder input (an encoder's states depend on the query, so no cache).
Optional contextual calibration (Zhao et al. 2021) divides the label probabilities by those of
a content-free input ("N/A" in every field)."""

from __future__ import annotations

import random

import torch
from transformers import DynamicCache

from promptscale.data.example import Example
from promptscale.errors import ConfigError, check_choice, check_min
from promptscale.families import family
from promptscale.methods.base import AdaptationModule
from promptscale.methods.icl.config import ICLConfig
from promptscale.models import cache_kwargs

SEPARATOR = "\n\n"


def pick_demonstrations(examples: list[Example], shots: int, selection: str, seed: int) -> list[Example]:
    """``shots`` labelled examples: a seeded sample, or round-robin over the labels (balanced);
    then a seeded order."""
    rng = random.Random(seed)
    labelled = [e for e in examples if e.label is not None]
    if selection == "balanced":
        by_label: dict[int, list[Example]] = {}
        for e in rng.sample(labelled, len(labelled)):
            by_label.setdefault(e.label, []).append(e)
        queues = [by_label[label] for label in sorted(by_label)]
        chosen = []
        while len(chosen) < shots:  # one per label per round
            chosen += [queue.pop() for queue in queues if queue][: shots - len(chosen)]
    else:
        chosen = rng.sample(labelled, shots)
    rng.shuffle(chosen)
    return chosen


def demonstration_text(encoder, demos: list[Example]) -> str:
    """The block before every query: each demonstration's prompt, its answer, a separator."""
    return "".join(encoder.demonstration(e) + SEPARATOR for e in demos)


class ICL(AdaptationModule):
    schema = ICLConfig

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        if not family(cfg.model.family).generates:
            return "in-context learning needs a generative LM (decoder-only or encoder-decoder)"
        if cfg.task.kind == "tagging":
            return "in-context learning scores answer candidates; sequence labeling has none"
        return super().unsupported(cfg)

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        check_min(cfg.method, "shots", 0)
        check_choice("method.selection", cfg.method.selection, ("random", "balanced"))
        if cfg.method.calibrate and cfg.task.kind != "classification":
            raise ConfigError("method.calibrate needs a classification task (fixed label candidates)")

    @classmethod
    def check_data(cls, cfg, data) -> None:
        available = sum(e.label is not None for e in data.train_examples)
        if cfg.method.shots > available:
            raise ConfigError(
                f"method.shots={cfg.method.shots} is more than the {available} labelled training examples"
            )

    def setup_method(self) -> None:
        self.backbone.requires_grad_(False)
        self.demo_ids: list[int] = []
        self.replaces_start = 0
        self.demo_cache = None
        self.log_p_cf = None

    def prepare(self, data) -> None:
        """Tokenize the demonstration block (and encode it once); calibrate if asked."""
        encoder = data.encoder
        demos = pick_demonstrations(data.train_examples, self.hp.shots, self.hp.selection, self.cfg.seed)
        text = demonstration_text(encoder, demos)
        # the block begins the sequence: it takes the start tokens (a decoder's <bos>) from the rows
        self.demo_ids = [*encoder.prefix, *encoder.ids(text)] if text else []
        self.replaces_start = len(encoder.prefix) if text else 0
        self.demo_cache = None
        if self.demo_ids and self.hp.cache_demos and self.backbone.family.cached_context:
            ids = torch.tensor([self.demo_ids], device=self.device)
            cache = DynamicCache()  # filled in place by the forward: no output field to read back
            base = self.backbone.model.base_model
            with torch.no_grad():
                base(input_ids=ids, use_cache=True, **cache_kwargs(base, cache))
            self.demo_cache = [(layer.keys, layer.values) for layer in cache.layers]
        self.log_p_cf = None
        if self.hp.calibrate:
            content_free = Example(
                guid="content-free", fields={k: "N/A" for k in data.eval_examples[0].fields}, label=0
            )
            batch = data.collator([content_free])([encoder.encode(content_free, 0)])
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.no_grad():
                self.log_p_cf = self(batch)[0].log_softmax(-1)

    def on_validation_start(self) -> None:
        self.prepare(self.trainer.datamodule)

    def virtual_tokens(self, batch_size: int):
        if not self.demo_ids or self.demo_cache is not None:
            return None
        ids = torch.tensor(self.demo_ids, device=self.device)
        return self.backbone.embed(ids).unsqueeze(0).expand(batch_size, -1, -1)

    def layer_prefixes(self, batch_size: int):
        if self.demo_cache is None:
            return None
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(self.demo_cache):
            cache.update(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), layer)
        return cache

    def forward(self, batch):
        scores = super().forward(batch)
        if self.log_p_cf is None:
            return scores
        return scores.log_softmax(-1) - self.log_p_cf
