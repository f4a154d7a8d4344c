"""Prompt Tuning (Lester et al. 2021): ``prompt_length`` trainable embeddings prepended to the
input embeddings; the backbone is frozen (unless ``tune_lm``: prompt + LM tuning), so only p x d_model weights (plus a task head where
the task needs one: sequence labeling, or method.head=cls) train.

Our own module rather than PEFT's: our heads need the number of virtual tokens to shift the
[MASK], slot and label positions, and Lester's inits (sampled vocab, class labels) are not in
PEFT. Inits are registered in ``PROMPT_INITS`` by name (``method.init``): random (uniform),
vocab (sampled from the most frequent tokens), class_label (its leftover rows from
``init_fallback``), text, file (a trained prompt: prompt transfer)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from promptscale.data.encoding import label_words
from promptscale.errors import ConfigError, check_choice, check_min
from promptscale.methods.base import AdaptationModule
from promptscale.methods.prompt_tuning.config import PromptTuningConfig

BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
UNUSED = re.compile(r"^(\[unused\d+\]|<unused\d+>)$")
log = logging.getLogger("promptscale")


def frequent_token_ids(tokenizer, top: int) -> list[int]:
    """The ``top`` most frequent ordinary tokens, most frequent first.

    No vocabulary ships with counts, so rank comes from its order: BPE ids follow merge order and
    SentencePiece / Unigram ids follow piece scores, both close to corpus frequency, so a lower
    id is a more frequent token. WordPiece (BERT) puts [unused] slots and single characters
    first and interleaves ## continuations with whole words that follow roughly by frequency; for
    it we skip single characters and ## pieces and keep the order of the rest.
    Special, added, [unused]/<unused>, byte-fallback (<0x..>) and whitespace-only tokens never count.
    """
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    wordpiece = type(model).__name__ == "WordPiece"
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    ids = []
    for token, i in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        if i in excluded or UNUSED.match(token) or BYTE_FALLBACK.match(token):
            continue
        if wordpiece and (token.startswith("##") or len(token) == 1):
            continue
        if not token.replace("▁", "").replace("Ġ", "").strip() or not tokenizer.decode([i]).strip():
            continue  # whitespace-only (SentencePiece "▁", byte-level "Ġ", "Ċ")
        ids.append(i)
        if len(ids) == top:
            break
    return ids


def _embed(module: PromptTuning, ids) -> torch.Tensor:
    """What the input embedding layer gives for ``ids``, as the virtual tokens will sit beside it:
    the layer is called, not its weight read, because some scale their output (Gemma multiplies
    by sqrt(d_model), ~25x at 640) and a prompt copied from the raw weight would start that much
    smaller than the text around it. PEFT's text init calls the layer the same way."""
    layer = module.backbone.model.get_input_embeddings()
    with torch.no_grad():
        return layer(torch.as_tensor(ids, dtype=torch.long, device=layer.weight.device)).float().cpu().clone()


def init_random(module: PromptTuning, generator: torch.Generator, rows: int) -> torch.Tensor:
    """Uniform in [-init_range, init_range] (Lester et al.: 0.5)."""
    r = module.hp.init_range
    return torch.rand((rows, module.backbone.hidden_size), generator=generator) * 2 * r - r


def init_vocab(module: PromptTuning, generator: torch.Generator, rows: int) -> torch.Tensor:
    """Embeddings of tokens sampled (without replacement while they last) from the
    ``init_vocab_top`` most frequent tokens."""
    ids = torch.tensor(frequent_token_ids(module.backbone.tokenizer, module.hp.init_vocab_top))
    rounds = max(1, -(-rows // len(ids)))
    picks = torch.cat([torch.randperm(len(ids), generator=generator) for _ in range(rounds)])[:rows]
    return _embed(module, ids[picks])


def init_class_label(module: PromptTuning, generator: torch.Generator, rows: int) -> torch.Tensor:
    """Row i: the mean embedding of label i's verbalizer tokens (all its words'), in label order; rows past the
    labels come from ``init_fallback`` (vocab: sampled, Lester et al.'s; random: uniform). Choice
    tasks have no fixed labels: every row comes from the fallback."""
    task, fallback = module.task, CLASS_LABEL_FALLBACKS[module.hp.init_fallback]
    if task.kind != "classification":
        log.warning(
            "method.init=class_label: task %s has no fixed labels; using init=%s", task.name, module.hp.init_fallback
        )
        return fallback(module, generator, rows)
    tok = module.backbone.tokenizer
    # tokenized as in the answer slot (see TaskEncoder.encode)
    labels = [
        _embed(
            module,
            [
                i
                for w in label_words(task.verbalizer[label])
                for i in tok(" " + w, add_special_tokens=False)["input_ids"]
            ],
        ).mean(0)
        for label in task.labels
    ]
    label_rows = torch.stack(labels[:rows])
    return torch.cat([label_rows, fallback(module, generator, rows - len(label_rows))])


def init_text(module: PromptTuning, generator: torch.Generator, rows: int) -> torch.Tensor:
    """The embeddings of ``init_text``'s tokens, repeated or truncated to the prompt length."""
    ids = module.backbone.tokenizer(module.hp.init_text, add_special_tokens=False)["input_ids"]
    return _embed(module, [ids[i % len(ids)] for i in range(rows)])


PROMPT_KEYS = ("prompt", "prompt_embeddings")  # promptscale's weights file; a PEFT prompt-tuning adapter


def init_file(module: PromptTuning, generator: torch.Generator, rows: int) -> torch.Tensor:
    """A trained prompt from ``init_file`` (prompt transfer, Vu et al. 2022's SPoT): a finished
    prompt_tuning run's ``weights-<hash>.safetensors`` or a PEFT prompt-tuning
    ``adapter_model.safetensors``, of this prompt's length and this model's width."""
    from safetensors.torch import load_file

    path = module.hp.init_file
    prompt = load_file(path)[stored_prompt(path)[0]].float()
    if tuple(prompt.shape) != (rows, module.backbone.hidden_size):
        raise ConfigError(
            f"method.init_file={path}: a prompt of shape {tuple(prompt.shape)}, this run needs "
            f"{(rows, module.backbone.hidden_size)} (prompt_length x the model's width)"
        )
    return prompt


def stored_prompt(path: str) -> tuple[str, list[int]]:
    """Which of PROMPT_KEYS the safetensors file holds, and its shape, read from the file's header
    (ConfigError naming the file if it is unreadable or holds no 2-D prompt)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            key = next((k for k in PROMPT_KEYS if k in keys), None)
            shape = f.get_slice(key).get_shape() if key else None
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"method.init_file={path}: not a readable safetensors file ({err})") from None
    if key is None:
        raise ConfigError(
            f"method.init_file={path}: no prompt in it (keys {', '.join(PROMPT_KEYS)}; it has {keys[:5]})"
        )
    if len(shape) != 2:
        raise ConfigError(f"method.init_file={path}: {key} has shape {shape}, not (prompt_length, width)")
    return key, shape


PROMPT_INITS = {
    "random": init_random,
    "vocab": init_vocab,
    "class_label": init_class_label,
    "text": init_text,
    "file": init_file,
}
CLASS_LABEL_FALLBACKS = {"vocab": init_vocab, "random": init_random}


class PromptTuning(AdaptationModule):
    schema = PromptTuningConfig

    @classmethod
    def check_supported(cls, cfg) -> None:
        super().check_supported(cfg)
        check_min(cfg.method, "prompt_length", 1)
        check_choice("method.init", cfg.method.init, PROMPT_INITS)
        if cfg.method.init == "text" and not cfg.method.init_text.strip():
            raise ConfigError("method.init=text needs method.init_text (the string whose embeddings start the prompt)")
        check_min(cfg.method, "init_vocab_top", 1)
        check_choice("method.init_fallback", cfg.method.init_fallback, CLASS_LABEL_FALLBACKS)
        if cfg.method.init == "file":
            if not cfg.method.init_file:
                raise ConfigError("method.init=file needs method.init_file (a trained prompt's safetensors file)")
            # before any model loads: the file holds a prompt of this length
            rows = stored_prompt(cfg.method.init_file)[1][0]
            if rows != cfg.method.prompt_length:
                raise ConfigError(
                    f"method.init_file={cfg.method.init_file}: a prompt of {rows} tokens, "
                    f"method.prompt_length={cfg.method.prompt_length}"
                )

    @classmethod
    def input_files(cls, cfg) -> dict[str, str]:
        return {"method.init_file": cfg.method.init_file} if cfg.method.init == "file" else {}

    def setup_method(self) -> None:
        self.backbone.requires_grad_(self.hp.tune_lm)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        self.prompt = nn.Parameter(PROMPT_INITS[self.hp.init](self, generator, self.hp.prompt_length))

    def param_groups(self) -> list[dict]:
        if not self.hp.tune_lm:
            return super().param_groups()
        rest = [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("backbone.")]
        return [{"params": rest}, {"params": list(self.backbone.parameters()), "lr": self.hp.lm_lr}]

    def virtual_tokens(self, batch_size: int) -> torch.Tensor:
        return self.prompt.unsqueeze(0).expand(batch_size, -1, -1)

    def save_peft(self, folder: Path) -> None:
        """Write the prompt in PEFT's format (decoder-only models: ``PeftModel.from_pretrained``
        onto the base model prepends the same virtual tokens)."""
        from peft import PromptTuningConfig, TaskType
        from safetensors.torch import save_file

        if not self.backbone.family.peft_export:
            raise ConfigError("the PEFT export of a prompt is for decoder-only models (PEFT's CAUSAL_LM)")
        config = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=self.hp.prompt_length,
            token_dim=self.backbone.hidden_size,
            num_transformer_submodules=1,
            base_model_name_or_path=self.base_model_id(),
        )
        Path(folder).mkdir(parents=True, exist_ok=True)
        config.save_pretrained(folder)
        save_file({"prompt_embeddings": self.prompt.detach().contiguous()}, Path(folder) / "adapter_model.safetensors")
