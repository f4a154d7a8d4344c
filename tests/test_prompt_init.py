"""Lester et al.'s prompt initializations produce exactly the rows they promise."""

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from promptscale.errors import ConfigError
from promptscale.methods.prompt_tuning.model import PromptTuning, frequent_token_ids
from promptscale.models import load_backbone
from promptscale.train import compose


def build(overrides):
    cfg = compose(["method=prompt_tuning", *overrides])
    return PromptTuning(cfg, load_backbone(cfg.model))


def embeddings(module):
    return module.backbone.model.get_input_embeddings().weight.detach()


def test_wordpiece_ranking_skips_specials_unused_characters_and_continuations():
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "the", "##s", "of", "cat"]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    assert wrapped.convert_ids_to_tokens(frequent_token_ids(wrapped, 10)) == ["the", "of", "cat"]
    assert wrapped.convert_ids_to_tokens(frequent_token_ids(wrapped, 2)) == ["the", "of"]


def test_sentencepiece_ranking_skips_byte_fallback_and_whitespace():
    pieces = [
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("<0x0A>", 0.0),
        ("▁", -1.0),
        ("▁the", -2.0),
        ("s", -3.0),
        ("<unused1>", -4.0),
    ]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=True))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    assert wrapped.convert_ids_to_tokens(frequent_token_ids(wrapped, 10)) == ["▁the", "s"]


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-bert", "tiny-t5"])
def test_vocab_init_copies_seeded_rows_of_the_most_frequent_tokens(model):
    module = build(
        [f"model={model}", "method.init=vocab", "method.prompt_length=7", "method.init_vocab_top=50", "seed=3"]
    )
    top = torch.tensor(frequent_token_ids(module.backbone.tokenizer, 50))
    picks = torch.randperm(len(top), generator=torch.Generator().manual_seed(3))[:7]
    assert torch.equal(module.prompt.detach(), embeddings(module)[top[picks]])
    assert not set(top.tolist()) & set(module.backbone.tokenizer.all_special_ids)


def test_vocab_init_follows_the_seed():
    a = build(["method.init=vocab", "seed=0"]).prompt
    b = build(["method.init=vocab", "seed=1"]).prompt
    assert not torch.equal(a, b)


def test_class_label_rows_are_verbalizer_embeddings_in_label_order():
    # CB: entailment/contradiction/neutral -> Yes/No/"Maybe so" (two tokens, averaged)
    module = build(["task=cb", "method.init=class_label", "method.prompt_length=5", "task.verbalizer.neutral=Maybe so"])
    tok, emb = module.backbone.tokenizer, embeddings(module)
    for row, word in enumerate(["Yes", "No", "Maybe so"]):
        ids = tok(" " + word, add_special_tokens=False)["input_ids"]
        assert torch.allclose(module.prompt[row], emb[ids].mean(0))
    assert len(tok(" Maybe so", add_special_tokens=False)["input_ids"]) > 1
    top = set(frequent_token_ids(tok, 5000))
    for row in module.prompt[3:]:  # leftover rows: vocab-sampled
        assert any(torch.equal(row, emb[i]) for i in top)


def test_class_label_with_fewer_rows_than_labels_takes_the_first_labels():
    module = build(["task=cb", "method.init=class_label", "method.prompt_length=1"])
    ids = module.backbone.tokenizer(" Yes", add_special_tokens=False)["input_ids"]
    assert torch.allclose(module.prompt[0], embeddings(module)[ids].mean(0))


def test_class_label_on_a_choice_task_falls_back_to_vocab_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="promptscale"):
        module = build(["task=copa", "method.init=class_label", "method.prompt_length=4", "seed=5"])
    assert "no fixed labels" in caplog.text
    vocab = build(["task=copa", "method.init=vocab", "method.prompt_length=4", "seed=5"])
    assert torch.equal(module.prompt, vocab.prompt)


def test_text_init_repeats_the_text_embeddings():
    module = build(["method.init=text", "method.prompt_length=5", "method.init_text=Is it true"])
    ids = module.backbone.tokenizer("Is it true", add_special_tokens=False)["input_ids"]
    expected = embeddings(module)[[ids[i % len(ids)] for i in range(5)]]
    assert torch.equal(module.prompt.detach(), expected)


def test_random_init_is_uniform_in_range_and_counts_p_times_d():
    module = build(["method.prompt_length=100", "method.init_range=0.5"])
    assert module.prompt.shape == (100, module.backbone.hidden_size)
    assert module.prompt.abs().max() <= 0.5
    assert module.parameter_counts()["trained_params"] == 100 * module.backbone.hidden_size


def test_prompt_peft_folder_loads_with_peft_and_matches(tmp_path):
    from peft import PeftModel

    module = build(["method.init=vocab", "method.prompt_length=4"])
    module.eval()
    module.save_peft(tmp_path / "peft")
    fresh = load_backbone(module.cfg.model).model.eval()
    peft_model = PeftModel.from_pretrained(fresh, tmp_path / "peft").eval()
    ids = module.backbone.tokenizer("Ann bought a red car in Lima.", return_tensors="pt").input_ids
    with torch.no_grad():
        embeds = torch.cat([module.virtual_tokens(1), module.backbone.embed(ids)], dim=1)
        ours = module.backbone.model(inputs_embeds=embeds).logits
        theirs = peft_model(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("init", ["class_label", "vocab", "text"])
def test_token_inits_start_at_the_scale_the_embedding_layer_gives(init):
    """Gemma's embedding layer multiplies its rows by sqrt(d_model): a prompt copied from those
    tokens starts where the layer puts them beside the text, not at the raw weight's scale."""
    module = build(["model=tiny-gemma3", "task=cb", f"method.init={init}", "method.init_text=Yes or no"])
    layer = module.backbone.model.get_input_embeddings()
    scale = float(layer.embed_scale)
    assert scale > 1
    weight = layer.weight.detach()
    prompt = module.prompt.detach()
    # every row is a mean of layer outputs: weight rows times the scale
    assert prompt.norm(dim=-1).mean() > 0.5 * scale * weight.norm(dim=-1).mean()
    if init == "text":
        ids = module.backbone.tokenizer("Yes or no", add_special_tokens=False)["input_ids"]
        assert torch.allclose(prompt[0], weight[ids[0]] * scale, atol=1e-5)


def test_class_label_fallback_random_fills_the_rest_uniformly():
    module = build(["task=cb", "method.init=class_label", "method.prompt_length=6", "method.init_fallback=random"])
    ids = module.backbone.tokenizer(" Yes", add_special_tokens=False)["input_ids"]
    assert torch.allclose(module.prompt[0], embeddings(module)[ids].mean(0))
    rest = module.prompt[3:].detach()
    emb = embeddings(module)
    assert rest.abs().max() <= module.hp.init_range
    assert not any(torch.equal(row, emb[i]) for row in rest for i in range(len(emb)))


def test_file_init_starts_from_a_trained_prompt(train, tmp_path):
    """init=file: prompt transfer from a finished run's weights file, or from a PEFT adapter."""
    from safetensors.torch import load_file

    from promptscale.evaluate import weights_of

    record = train(["method=prompt_tuning", "model=tiny-llama", "method.prompt_length=4"], tmp_path / "source")
    source = weights_of(tmp_path / "source" / "run")
    trained = load_file(source)["prompt"]
    module = build(["model=tiny-llama", "method.init=file", f"method.init_file={source}", "method.prompt_length=4"])
    assert record["status"] == "finished" and torch.equal(module.prompt.detach(), trained)
    module.save_peft(tmp_path / "peft")
    peft_file = tmp_path / "peft" / "adapter_model.safetensors"
    again = build(["model=tiny-llama", "method.init=file", f"method.init_file={peft_file}", "method.prompt_length=4"])
    assert torch.equal(again.prompt, module.prompt)


@pytest.mark.parametrize(
    "setting,message",
    [
        ("method.init_file=MISSING", "not a readable safetensors file"),
        ("method.prompt_length=5", "a prompt of 4 tokens, method.prompt_length=5"),
        ("method.init_file=", "method.init=file needs method.init_file"),
        ("method.init_fallback=zeros", "method.init_fallback"),
    ],
)
def test_file_init_mistakes_are_one_line_before_a_model_loads(sample_data, tmp_path, no_model, setting, message):
    from safetensors.torch import save_file

    from promptscale.config import validate
    from promptscale.errors import ConfigError

    prompt = tmp_path / "prompt.safetensors"
    save_file({"prompt": torch.zeros(4, 32)}, prompt)
    setting = setting.replace("MISSING", str(tmp_path / "nothing.safetensors"))
    overrides = ["model=tiny-llama", "method.init=file", f"method.init_file={prompt}", "method.prompt_length=4"]
    cfg = compose(["method=prompt_tuning", f"data.dir={sample_data}", *overrides, setting])
    with pytest.raises(ConfigError, match=message) as info:
        validate(cfg)
    assert "\n" not in str(info.value)


def test_settings_added_later_keep_finished_runs_hashes():
    """A setting added to a schema hashes as absent at its neutral value (finished runs stay
    finished in a sweep re-run); any other value is a different run."""
    from promptscale.results import ADDED_SETTINGS, config_hash

    base = {"method": {"name": "prompt_tuning", "lr": 0.3}, "seed": 0}
    for (group, key), neutral in ADDED_SETTINGS.items():
        assert config_hash({**base, group: {**base[group], key: neutral}}) == config_hash(base)
        assert config_hash({**base, group: {**base[group], key: "other"}}) != config_hash(base)


def test_a_run_from_a_file_prompt_evaluates_without_the_file(train, sample_data, tmp_path):
    """eval/export rebuild the run from its weights: the init file may be gone."""
    import shutil

    from promptscale.evaluate import evaluate, weights_of

    train(["method=prompt_tuning", "model=tiny-llama", "method.prompt_length=4"], tmp_path / "source")
    source = tmp_path / "prompt.safetensors"
    shutil.copy(weights_of(tmp_path / "source" / "run"), source)
    overrides = ["method=prompt_tuning", "model=tiny-llama", "method.prompt_length=4", "method.init=file"]
    record = train([*overrides, f"method.init_file={source}"], tmp_path / "transfer")
    assert record["status"] == "finished"
    source.unlink()
    result = evaluate(tmp_path / "transfer" / "run", [f"data.dir={sample_data}"])
    assert result["score"] == pytest.approx(record["score"])


def test_a_file_prompt_run_hashes_the_file_contents_not_its_path(train, tmp_path):
    """Re-training the source prompt into the same path makes the transfer another run: a sweep
    re-run trains it again instead of skipping it as finished; the same contents are skipped."""
    import shutil

    from promptscale.evaluate import weights_of

    overrides = ["method=prompt_tuning", "model=tiny-llama", "method.prompt_length=4"]
    source = tmp_path / "prompt.safetensors"
    transfer = [*overrides, "method.init=file", f"method.init_file={source}"]
    train([*overrides, "seed=0"], tmp_path / "seed0")
    shutil.copy(weights_of(tmp_path / "seed0" / "run"), source)
    first = train(transfer, tmp_path / "transfer")
    again = train(transfer, tmp_path / "transfer")
    train([*overrides, "seed=1"], tmp_path / "seed1")
    shutil.copy(weights_of(tmp_path / "seed1" / "run"), source)  # the same path, another prompt
    other = train(transfer, tmp_path / "transfer")
    assert first["status"] == again["status"] == other["status"] == "finished"
    assert again["config_hash"] == first["config_hash"] and again["finished_at"] == first["finished_at"]  # skipped
    assert other["config_hash"] != first["config_hash"]
    assert first["config"]["file_digests"]["method.init_file"] != other["config"]["file_digests"]["method.init_file"]
    lines = (tmp_path / "transfer" / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # the same prompt under another path is the same run
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(source, moved)
    same = train([*overrides, "method.init=file", f"method.init_file={moved}"], tmp_path / "transfer")
    assert same["config_hash"] == other["config_hash"] and same["finished_at"] == other["finished_at"]


def test_an_input_file_changed_while_a_run_starts_fails_it(train, tmp_path, monkeypatch):
    """The digest is taken before the model loads, the file read while the method is built: a
    file rewritten in between fails the run with one line, never a result under the old hash."""
    import shutil

    import promptscale.models as models
    from promptscale.evaluate import weights_of

    overrides = ["method=prompt_tuning", "model=tiny-llama", "method.prompt_length=4"]
    train([*overrides, "seed=0"], tmp_path / "seed0")
    train([*overrides, "seed=1"], tmp_path / "seed1")
    source = tmp_path / "prompt.safetensors"
    shutil.copy(weights_of(tmp_path / "seed0" / "run"), source)
    load = models.load_backbone

    def load_then_retrain(*args, **kwargs):
        shutil.copy(weights_of(tmp_path / "seed1" / "run"), source)  # another job re-trains the source
        return load(*args, **kwargs)

    monkeypatch.setattr(models, "load_backbone", load_then_retrain)
    with pytest.raises(ConfigError, match=r"method.init_file=.*: changed while the run started") as info:
        train([*overrides, "method.init=file", f"method.init_file={source}"], tmp_path / "transfer")
    assert "\n" not in str(info.value)
    lines = [json.loads(line) for line in (tmp_path / "transfer" / "run" / "results.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["failed"]


@pytest.mark.parametrize(
    "method,key",
    [("prompt_tuning", "init_file"), ("cot", "demonstrations_file")],
)
def test_every_input_file_hashes_by_contents(method, key, tmp_path):
    """The siblings: each method's files beside the data are hashed by contents, not path."""
    from promptscale.methods import method_class
    from promptscale.results import config_hash, file_digests

    cfg = compose(
        [f"method={method}", "model=tiny-llama", *(["method.init=file"] if method == "prompt_tuning" else [])]
    )
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("one")
    b.write_text("one")

    def hashed(path):
        cfg.method[key] = str(path)
        config = OmegaConf.to_container(cfg, resolve=True)
        config["file_digests"] = file_digests(method_class(method).input_files(cfg))
        return config_hash(config)

    assert hashed(a) == hashed(b)
    assert list(method_class(method).input_files(cfg)) == [f"method.{key}"]
    b.write_text("two")
    assert hashed(a) != hashed(b)


def test_added_settings_neutral_values_are_the_schema_defaults():
    """ADDED_SETTINGS repeats each new setting's default (results.py stays free of the method
    modules): the two must agree, or a default run would hash as a non-default one."""
    import dataclasses

    from promptscale.methods import method_schemas
    from promptscale.results import ADDED_SETTINGS

    for (group, key), neutral in ADDED_SETTINGS.items():
        assert group == "method"
        defaults = [f.default for s in method_schemas().values() for f in dataclasses.fields(s) if f.name == key]
        assert defaults and all(d == neutral for d in defaults), key


def test_an_unreadable_input_file_is_one_line_naming_its_key(tmp_path):
    from promptscale.errors import ConfigError
    from promptscale.results import file_digests

    with pytest.raises(ConfigError, match=r"^method.init_file=.*gone.safetensors: cannot be read") as info:
        file_digests({"method.init_file": str(tmp_path / "gone.safetensors")})
    assert "\n" not in str(info.value)
