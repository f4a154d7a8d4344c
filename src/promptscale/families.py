"""The three backbone families, each one object: what every other part of promptscale asks about a
model's architecture (how its inputs are framed, where an answer is read, what it can do). The
model YAML's ``family`` names one; nothing outside this module branches on a family's name.

Adding a family: one more ``Family`` here (its Auto class, its frame, its abilities, a tiny model
YAML for the tests), its name in the model YAMLs; the support matrix (``promptscale matrix``) and
the matrix test then cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptscale.errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str
    auto_class: str  # transformers Auto class of the model with its LM head
    cloze: bool  # answers fill [MASK] slots inside the input (a masked LM's head reads them)
    seq2seq: bool  # the prompt is encoded once and each candidate is the decoder's target (T5)
    input_heads: bool  # linear heads (a classifier, token tags) read the input's hidden states
    reads_last: bool  # a classifier reads the last input token (else the first: [CLS])
    generates: bool  # writes text: in-context demonstrations as context, chain-of-thought
    cached_context: bool  # a context shared by every input (ICL's demonstrations) encodes once, as a KV cache
    peft_export: bool  # trained prompts and prefixes export as PEFT CAUSAL_LM adapters
    max_specials: int  # the most special tokens around an input, known without a tokenizer
    tiny_model: str  # the random tiny model (conf/model/) that tests and the support matrix use

    def frame(self, tokenizer) -> tuple[list[int], list[int]]:
        """The special tokens before and after every input: [CLS] .. [SEP] for masked LMs, .. </s>
        for T5's encoder input, and for decoders whatever the tokenizer itself puts before a text
        (Gemma's and Llama's <bos>; nothing for GPT-2 or SmolLM2), as lm-evaluation-harness reads a
        decoder's context with the tokenizer's defaults. Never an end token after a decoder's
        input: the answer continues it."""
        if self.cloze:
            return [tokenizer.cls_token_id], [tokenizer.sep_token_id]
        if self.seq2seq:
            return [], [tokenizer.eos_token_id]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        start = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), 0)
        return full[:start], []

    def model_class(self, mlm_head: bool = True) -> str:
        """The Auto class to load: a masked LM without its MLM head (a sentence encoder) loads bare."""
        return "AutoModel" if self.cloze and not mlm_head else self.auto_class

    def tiny_config_ids(self, tokenizer) -> dict:
        """Special-token ids a randomly initialised model's config needs from its tokenizer."""
        ids = {"pad_token_id": tokenizer.pad_token_id}
        if self.seq2seq:
            ids.update(eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
        elif not self.cloze:
            ids.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        return ids

    def new_tokens(self, generated, input_length: int):
        """The tokens ``generate`` wrote for one input (a decoder-only output repeats its input)."""
        return generated if self.seq2seq else generated[input_length:]


ENCODER = Family(
    "encoder", "AutoModelForMaskedLM", cloze=True, seq2seq=False, input_heads=True, reads_last=False,
    generates=False, cached_context=False, peft_export=False, max_specials=2, tiny_model="tiny-bert",
)  # fmt: skip
ENCDEC = Family(
    "encdec", "AutoModelForSeq2SeqLM", cloze=False, seq2seq=True, input_heads=False, reads_last=False,
    generates=True, cached_context=False, peft_export=False, max_specials=1, tiny_model="tiny-t5",
)  # fmt: skip
DECODER = Family(
    "decoder", "AutoModelForCausalLM", cloze=False, seq2seq=False, input_heads=True, reads_last=True,
    generates=True, cached_context=True, peft_export=True, max_specials=1, tiny_model="tiny-gpt2",
)  # fmt: skip
FAMILIES = {f.name: f for f in (ENCODER, ENCDEC, DECODER)}


def family(name: str | Family) -> Family:
    """The family a model YAML's ``family`` names (a Family passes through)."""
    if isinstance(name, Family):
        return name
    if name not in FAMILIES:
        raise ConfigError(f"model.family={name!r} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[name]
