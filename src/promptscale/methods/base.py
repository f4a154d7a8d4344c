"""The LightningModule every method shares: reading the backbone for each task type, steps,
metrics, optimizer and scheduler, parameter accounting and trainable-only checkpoints.

A method overrides ``setup_method`` (what trains, what it adds) and, if it changes the input,
``virtual_tokens`` (embeddings placed before the input; positions are shifted for it).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from promptscale.config import MethodConfig
from promptscale.data.encoding import IGNORE
from promptscale.errors import ConfigError
from promptscale.families import family
from promptscale.metrics import build_metrics


def label_scores(scores: torch.Tensor, cand_label: torch.Tensor) -> torch.Tensor:
    """A label's score from its words' (several label words per class): the mean of their scores,
    as OpenPrompt's ManualVerbalizer averages its label words' log-probabilities. [B, C] -> [B, L]."""
    words = F.one_hot(cand_label.clamp(min=0), int(cand_label.max()) + 1).to(scores.dtype)
    words = words * (cand_label >= 0).unsqueeze(-1)  # [B, C, L]
    total = torch.einsum("bc,bcl->bl", scores.masked_fill(cand_label < 0, 0.0), words)
    return total / words.sum(1)


class AdaptationModule(L.LightningModule):
    # the method's settings (``method.*``): a dataclass on MethodConfig, defined beside the method
    schema: type = MethodConfig

    @classmethod
    def unsupported(cls, cfg) -> str | None:
        """Why this method cannot run on this task type and model family (None if it can)."""
        kind, fam, head = cfg.task.kind, family(cfg.model.family), cfg.method.head
        if kind == "tagging" and not fam.input_heads:
            return "sequence labeling needs a token head on an encoder or a decoder-only model; encoder-decoders are read text-to-text"
        if head == "cls" and kind != "tagging" and (kind == "choice" or not fam.input_heads):
            return (
                "method.head=cls needs a classification task on an encoder or a decoder-only model; use method.head=lm"
            )
        if fam.cloze and not cfg.model.mlm_head and head == "lm" and kind != "tagging":
            return "this encoder has no MLM head to score verbalizers with (model.mlm_head=false); use method.head=cls"
        return None

    @classmethod
    def check_supported(cls, cfg) -> None:
        """Raise ConfigError, in one line, for a combination or a value this method can't run."""
        reason = cls.unsupported(cfg)
        if reason:
            raise ConfigError(
                f"method={cfg.method.name} on task={cfg.task.name} ({cfg.task.kind}) with model={cfg.model.name} "
                f"({cfg.model.family}): {reason}"
            )

    @classmethod
    def check_data(cls, cfg, data) -> None:
        """Checks that need the read splits (still before any model loads)."""

    @classmethod
    def input_files(cls, cfg) -> dict[str, str]:
        """Config key -> file, for the files beside the data whose contents this run reads: their
        digests join the config hash (the same path with other contents is another run)."""
        return {}

    @classmethod
    def apply_to_task(cls, cfg) -> None:
        """Rewrite the task's config where the method changes how it is read: ``method.pattern``
        (an index or a name) swaps in one of the task's hard prompts (and its verbalizer, delimiter
        and choice text) for the model's family."""
        key, task, family = cfg.method.pattern, cfg.task, cfg.model.family
        if key is None:
            return
        patterns = task.patterns.get(family, [])
        names = [p.get("name") for p in patterns]
        index = names.index(key) if key in names else key
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(patterns):
            named = f" (named: {', '.join(n for n in names if n)})" if any(names) else ""
            raise ConfigError(
                f"method.pattern={key}: task {task.name} has {len(patterns)} pattern(s) for {family} models{named}"
            )
        pattern = patterns[index]
        task.template = pattern.template
        task.verbalizer.update(pattern.get("verbalizer") or {})
        for key in ("delimiter", "choice"):
            if pattern.get(key) is not None:
                task[key] = pattern[key]
        task.pattern_name = pattern.get("name") or str(index)

    def __init__(self, cfg, backbone):
        super().__init__()
        self.cfg, self.task, self.hp = cfg, cfg.task, cfg.method
        self.backbone = backbone
        n_labels = len(self.task.labels)
        d = backbone.hidden_size
        self.cls_head = nn.Linear(d, n_labels) if self.task.kind == "classification" and self.hp.head == "cls" else None
        self.tag_head = nn.Linear(d, n_labels) if self.task.kind == "tagging" else None
        self.metrics = nn.ModuleDict(build_metrics(list(self.task.metrics), n_labels or None))
        self.collected: list[tuple] = []  # per-example predictions of the last evaluation
        self.setup_method()
        # what the optimizer updates, counted before on_fit_end folds or merges anything away
        self.trained_params = sum(p.numel() for p in self.parameters() if p.requires_grad)
        self.strict_loading = False  # checkpoints of frozen-backbone methods hold trainable weights only

    # ---- what a method changes -------------------------------------------------------------
    def setup_method(self) -> None:
        """Decide what trains; add the method's parameters."""

    def virtual_tokens(self, batch_size: int) -> torch.Tensor | None:
        """Embeddings [B, p, d] placed before the input (soft prompts), or None."""
        return None

    def layer_prefixes(self, batch_size: int):
        """Key/value prefixes for every attention layer (a transformers Cache), or None."""
        return None

    def encode(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder-decoders: the encoder's hidden states."""
        return self.backbone.encoder_hidden_states(embeds, mask)

    def decode(self, encoded, mask, decoder_input_ids, decoder_mask) -> torch.Tensor:
        """Encoder-decoders: decoder logits over the already-encoded inputs."""
        return self.backbone.seq2seq_logits(encoded, mask, decoder_input_ids, decoder_mask)

    # ---- reading the backbone --------------------------------------------------------------
    def hidden(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cache = self.layer_prefixes(embeds.shape[0])
        if cache is None:
            return self.backbone.hidden_states(embeds, mask)
        mask = torch.cat([mask.new_ones(mask.shape[0], cache.get_seq_length()), mask], dim=1)
        return self.backbone.hidden_states(embeds, mask, cache=cache)

    # leading positions of every input row that the method's own context replaces: ICL's
    # demonstration block begins the sequence and carries the decoder's <bos> itself
    replaces_start = 0

    def inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Embeddings and mask of the model's input, and the shift of the batch's positions in it."""
        drop = self.replaces_start
        embeds = self.backbone.embed(batch["input_ids"][:, drop:])
        mask = batch["attention_mask"][:, drop:]
        prompt = self.virtual_tokens(embeds.shape[0])
        if prompt is None:
            return embeds, mask, -drop
        embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
        mask = torch.cat([mask.new_ones(mask.shape[0], prompt.shape[1]), mask], dim=1)
        return embeds, mask, prompt.shape[1] - drop

    def forward(self, batch) -> torch.Tensor:
        """Candidate scores [B, C] (classification, choice) or tag logits [B, L, T] (tagging)."""
        embeds, mask, offset = self.inputs(batch)
        if self.task.kind == "tagging":
            return self.tag_head(self.hidden(embeds, mask)[:, offset:])
        if self.cls_head is not None:
            hidden = self.hidden(embeds, mask)
            return self.cls_head(hidden[torch.arange(hidden.shape[0]), batch["cls_pos"] + offset])
        if self.backbone.family.seq2seq:
            encoded = self.encode(embeds, mask)
            rows = batch["decoder_example"]
            logits = self.decode(encoded[rows], mask[rows], batch["decoder_input_ids"], batch["decoder_attention_mask"])
        else:
            hidden = self.hidden(embeds, mask)
            slots = hidden[torch.arange(hidden.shape[0]).unsqueeze(1), batch["slot_pos"] + offset]
            logits = self.backbone.vocab_logits(slots)
        return self.candidate_scores(logits.float().log_softmax(-1), batch)

    def candidate_scores(self, logp: torch.Tensor, batch) -> torch.Tensor:
        """Score of candidate c of example b: sum (or mean) over its tokens t of
        log p(token t) read at slot t of its row; -inf where an example has fewer candidates."""
        rows, tokens, tmask = batch["cand_row"], batch["cand_tokens"], batch["cand_mask"]
        slot = torch.arange(tokens.shape[-1], device=tokens.device)
        token_logp = logp[rows.clamp(min=0).unsqueeze(-1), slot, tokens] * tmask
        scores = token_logp.sum(-1)
        if self.hp.score == "mean":
            scores = scores / tmask.sum(-1).clamp(min=1)
        scores = scores.masked_fill(rows < 0, float("-inf"))
        return scores if "cand_label" not in batch else label_scores(scores, batch["cand_label"])

    # ---- steps -----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.train()  # from_pretrained leaves models in eval mode; training uses dropout as configured

    def loss(self, out: torch.Tensor, batch) -> torch.Tensor:
        if self.task.kind == "tagging":
            return F.cross_entropy(out.flatten(0, 1), batch["tag_labels"].flatten(), ignore_index=IGNORE)
        return F.cross_entropy(out, batch["labels"], ignore_index=-1)

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["idx"].shape[0])
        return loss

    def decide(self, out: torch.Tensor, batch) -> torch.Tensor:
        """From forward's output: predicted label/candidate index [B], or predicted tag ids per
        word [B, W] (-1: none)."""
        if self.task.kind != "tagging":
            return out.argmax(-1)
        word_pos = batch["word_pos"]
        tags = out.argmax(-1).gather(1, word_pos.clamp(min=0))
        return tags.masked_fill(word_pos < 0, -1)

    def predict(self, batch):
        return self.decide(self(batch), batch)

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        self.update_metrics(batch, self.decide(out, batch), None if self.task.kind == "tagging" else out)

    # ---- per-example predictions (promptscale.predictions writes them) ------------------------
    # False: collect predictions only (``promptscale predict`` on unlabeled inputs)
    with_metrics = True

    def on_validation_epoch_start(self) -> None:
        self.collected: list[tuple] = []

    def collect(self, batch, preds: torch.Tensor, scores: torch.Tensor | None, extras=None) -> None:
        """Keep (example indices, predictions, candidate scores or None, per-example dicts for the
        predictions file or None) of one batch, on the CPU."""
        scores = None if scores is None else scores.detach().float().cpu()
        self.collected.append((batch["idx"].cpu(), preds.detach().cpu(), scores, extras))

    def gather_collected(self) -> None:
        """Under DDP every rank holds its shard: gather them all (the padded repeats are dropped
        by example index when the file is written)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shards = [None] * dist.get_world_size()
            dist.all_gather_object(shards, self.collected)
            self.collected = [item for shard in shards for item in shard]

    def update_metrics(self, batch, preds, scores: torch.Tensor | None = None, extras=None) -> None:
        """Record the batch's predictions (and candidate scores, or ``extras``: one dict per example
        for its predictions record) and update the task's metrics."""
        self.collect(batch, preds, scores, extras)
        if not self.with_metrics:
            return
        labels = batch.get("labels")
        for name, metric in self.metrics.items():
            if name in ("accuracy", "f1_macro"):
                metric.update(preds, labels)
            elif name == "multirc":
                metric.update(preds, labels, batch["groups"])
            elif name == "record":
                texts = [cands[p] if p < len(cands) else "" for cands, p in zip(batch["cand_texts"], preds.tolist())]
                metric.update(texts, batch["answers"])
            elif name == "entity_f1":
                names = list(self.task.labels)
                outside = names.index("O") if "O" in names else 0
                gold, pred = [], []
                for g, p in zip(batch["gold_tags"].tolist(), preds.tolist()):
                    n = sum(t != IGNORE for t in g)
                    gold.append([names[t] for t in g[:n]])
                    pred.append([names[t if t >= 0 else outside] for t in p[:n]])
                metric.update(pred, gold)

    def on_validation_epoch_end(self) -> None:
        self.gather_collected()
        if not self.with_metrics:
            return
        for metric in self.metrics.values():
            for key, value in metric.compute().items():
                self.log(f"eval/{key}", value)
            metric.reset()

    # ---- optimisation ----------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups (all trainable parameters at method.lr by default)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        from transformers.optimization import (
            Adafactor,
            get_constant_schedule_with_warmup,
            get_linear_schedule_with_warmup,
        )

        params = self.param_groups()
        hp = self.hp
        if hp.optimizer == "adafactor":  # Lester et al.'s setting: fixed lr, no parameter scaling
            opt = Adafactor(params, lr=hp.lr, weight_decay=hp.weight_decay, relative_step=False, scale_parameter=False)
        elif hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "linear":
            sched = get_linear_schedule_with_warmup(
                opt, hp.warmup_steps, max(1, self.trainer.estimated_stepping_batches)
            )
        else:
            sched = get_constant_schedule_with_warmup(opt, hp.warmup_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- accounting and checkpoints --------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """``trained_params``: the parameters that train (an MLP reparameterization included);
        ``kept_params``: the trainable parameters the module holds now, i.e. what the adapted model
        keeps once training has ended (Prefix-Tuning: the folded prefixes only; equal to
        trained_params for every method without a fold); ``total_params``: all, now."""
        params = list(self.parameters())
        return {
            "trained_params": self.trained_params,
            "kept_params": sum(p.numel() for p in params if p.requires_grad),
            "total_params": sum(p.numel() for p in params),
        }

    def checkpoint_bytes(self) -> int:
        """Bytes of the weights this method's checkpoint holds (trainable ones only, see below)."""
        checkpoint = {"state_dict": self.state_dict()}
        self.on_save_checkpoint(checkpoint)
        # tied weights (input embeddings = LM head) are one tensor under two names: count it once
        unique = {(t.data_ptr(), t.numel()): t.numel() * t.element_size() for t in checkpoint["state_dict"].values()}
        return sum(unique.values())

    def base_model_id(self) -> str | None:
        """The backbone's name on the Hugging Face hub (the model YAML's ``hub_id``, else a hub
        model's ``path``; None for the random tiny models): the base model of PEFT exports,
        never a local cache folder."""
        model = self.cfg.model
        return model.get("hub_id") or (model.path if model.source == "hub" else None)

    def on_save_checkpoint(self, checkpoint) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        if len(trainable) < len(list(self.parameters())):
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
