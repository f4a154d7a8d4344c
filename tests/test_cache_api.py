"""Prefixes and cached demonstrations reach every family through the cache argument the installed
transformers reads: no deprecation warning from our calls, and the T5 encoder hook either feeds
the encoder or stops at setup."""

import logging
import warnings

import pytest
import torch

from conftest import build_run
from promptscale.errors import PromptscaleError
from promptscale.models import load_backbone
from promptscale.train import compose

CACHE_WORDS = ("past_key_values", "cache_params", "`cache`")


def build(sample_data, overrides):
    _, module, data = build_run(sample_data, ["data.eval_size=4", *overrides])
    return module, data


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


CASES = [
    *(("prefix_tuning", m) for m in ("tiny-gpt2", "tiny-llama", "tiny-gemma3", "tiny-bert", "tiny-t5")),
    *(("ptuning_v2", m) for m in ("tiny-gpt2", "tiny-llama", "tiny-gemma3", "tiny-bert")),
    *(("icl", m) for m in ("tiny-gpt2", "tiny-llama", "tiny-gemma3")),  # decoder-only: the cached demonstrations
]


@pytest.mark.parametrize("method,model", CASES)
def test_our_forward_calls_raise_no_cache_deprecation(sample_data, method, model):
    import transformers

    overrides = [f"method={method}", f"model={model}", "task=cb"]
    if method == "icl":
        overrides += ["method.shots=2", "method.cache_demos=true"]
    records = Records()
    library_logger = transformers.utils.logging.get_logger("transformers")
    library_logger.addHandler(records)
    logging.Logger.warning_once.cache_clear()  # a warning given once earlier in this process shows again
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module, data = build(sample_data, overrides)
            if method == "icl":
                module.prepare(data)
                assert module.demo_cache is not None
            batch = next(iter(data.val_dataloader()))
            if method != "icl":  # a training step's forward and backward (nothing trains in ICL)
                module.train()
                module.loss(module(batch), batch).backward()
                module.eval()
            with torch.no_grad():
                module.predict(batch)
    finally:
        library_logger.removeHandler(records)
    messages = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    messages += records.messages
    assert not [m for m in messages if any(word in m for word in CACHE_WORDS)]


def test_a_prefix_changes_the_t5_encoder_and_a_masked_out_one_does_not(sample_data):
    module, data = build(sample_data, ["method=prefix_tuning", "model=tiny-t5", "task=cb", "method.prompt_length=3"])
    embeds, mask, _ = module.inputs(next(iter(data.val_dataloader())))
    with torch.no_grad():
        plain = module.backbone.encoder_hidden_states(embeds, mask)
        prefixed = module.encode(embeds, mask)
        module._encoder_cache = module.deep_prompt.cache(embeds.shape[0], embeds.dtype)
        try:
            masked_out = torch.cat([torch.zeros_like(mask[:, :3]), mask], dim=1)
            masked = module.backbone.encoder_hidden_states(embeds, masked_out)
        finally:
            module._encoder_cache = None
    assert prefixed.shape == plain.shape
    assert not torch.allclose(prefixed, plain, atol=1e-4)
    torch.testing.assert_close(masked, plain, rtol=0, atol=1e-5)


def _drop_cache(forward):
    """T5Attention.forward of a release that no longer reads a cache from its argument."""

    def without_cache(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kw):
        return forward(self, hidden_states, mask, key_value_states, position_bias, **kw)

    return without_cache


def _no_cache_argument(forward):
    def no_cache(self, hidden_states, mask=None, key_value_states=None, position_bias=None, **kw):
        return forward(self, hidden_states, mask, key_value_states, position_bias, **kw)

    return no_cache


@pytest.mark.parametrize(
    "change,message",
    [(_drop_cache, "ignores the key/value cache given as 'cache'"), (_no_cache_argument, "takes no key/value cache")],
)
def test_t5_encoder_hook_fails_at_setup_when_transformers_drops_the_mechanism(
    sample_data, monkeypatch, change, message
):
    from transformers.models.t5.modeling_t5 import T5Attention

    from promptscale import models

    monkeypatch.setattr(T5Attention, "forward", change(T5Attention.forward))
    models._cache_argument.cache_clear()
    try:
        with pytest.raises(PromptscaleError, match=message):
            build(sample_data, ["method=prefix_tuning", "model=tiny-t5", "task=cb"])
    finally:
        models._cache_argument.cache_clear()


def test_cache_argument_is_the_one_the_installed_forwards_read(sample_data):
    import inspect

    from promptscale.models import cache_argument

    for model in ("tiny-gpt2", "tiny-llama", "tiny-gemma3", "tiny-bert", "tiny-t5"):
        backbone = load_backbone(compose([f"model={model}"]).model)
        # what Backbone calls with a cache: T5's whole model (decoder prefixes), else the base model
        for module in [backbone.model if model == "tiny-t5" else backbone.model.base_model]:
            name = cache_argument(module)
            assert name in inspect.signature(type(module).forward).parameters
