"""Prefix-Tuning and P-Tuning v2: per-layer prefixes, frozen backbone, folding, exact counts."""

import lightning as L
import pytest
import torch

from conftest import build_run
from promptscale.config import validate
from promptscale.errors import ConfigError
from promptscale.models import load_backbone
from promptscale.train import compose


def build(sample_data, overrides):
    _, module, data = build_run(sample_data, ["data.eval_size=4", *overrides], eval_mode=False)
    return module, data


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("task", ["rte", "conll03"])
def test_ptuning_v2_counts_and_prefixes_change_outputs(sample_data, model, task):
    module, data = build(sample_data, ["method=ptuning_v2", f"model={model}", f"task={task}", "method.prompt_length=4"])
    layers, kv_heads, head_dim = module.backbone.kv_shape()
    head = module.tag_head or module.cls_head
    head_params = sum(p.numel() for p in head.parameters())
    assert module.parameter_counts()["trained_params"] == 4 * layers * 2 * kv_heads * head_dim + head_params
    batch = next(iter(data.val_dataloader()))
    module.eval()
    with torch.no_grad():
        with_prefix = module(batch)
        module.layer_prefixes = lambda batch_size: None
        without = module(batch)
    assert with_prefix.shape == without.shape  # prefixes never shift positions of the outputs
    assert not torch.allclose(with_prefix, without)


def test_prefix_tuning_folds_its_mlp_to_identical_outputs(sample_data):
    module, data = build(
        sample_data, ["method=prefix_tuning", "model=tiny-gpt2", "task=cb", "method.reparam_hidden=16"]
    )
    batch = next(iter(data.val_dataloader()))
    assert module.deep_prompt.prefix is None
    module.eval()  # no dropout
    with torch.no_grad():
        before = module(batch)
        module.deep_prompt.fold()
        after = module(batch)
    torch.testing.assert_close(before, after, rtol=0, atol=1e-6)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    assert names == ["deep_prompt.prefix"]
    layers, kv_heads, head_dim = module.backbone.kv_shape()
    assert module.parameter_counts()["kept_params"] == 10 * layers * 2 * kv_heads * head_dim


@pytest.mark.parametrize(
    "method,model", [("prefix_tuning", "tiny-bert"), ("prefix_tuning", "tiny-t5"), ("ptuning_v2", "tiny-bert")]
)
def test_training_keeps_backbone_frozen_and_saves_only_prefixes(train, tmp_path, method, model):
    seen = {}

    class Watch(L.Callback):
        def setup(self, trainer, module, stage):
            seen["module"] = module
            seen["backbone"] = {k: v.clone() for k, v in module.backbone.state_dict().items()}

        def on_train_start(self, trainer, module):
            seen["table"] = module.deep_prompt.table().detach().clone()

    record = train(
        [f"method={method}", f"model={model}", "task=rte", "trainer.max_steps=3"], tmp_path, callbacks=[Watch()]
    )
    module = seen["module"]
    after = module.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in seen["backbone"].items())
    assert not torch.equal(seen["table"], module.deep_prompt.table().detach())
    trainer = L.Trainer(logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "final.ckpt")
    state = torch.load(tmp_path / "final.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("backbone.") for k in state)
    assert "deep_prompt.prefix" in state and not any("mlp" in k for k in state)
    assert record["kept_params"] == sum(v.numel() for v in state.values())


def test_ptuning_v2_refuses_encoder_decoders_with_a_reason(sample_data):
    with pytest.raises(ConfigError, match="encdec"):
        validate(compose(["method=ptuning_v2", "model=tiny-t5", f"data.dir={sample_data}"]))


def test_t5_gets_prefixes_on_encoder_and_decoder(sample_data):
    module, data = build(sample_data, ["method=prefix_tuning", "model=tiny-t5", "task=cb", "method.prompt_length=3"])
    module.eval()
    layers, heads, head_dim = module.backbone.kv_shape()
    assert module.deep_prompt.table().shape == (layers, 2, heads, 3, head_dim)
    assert module.decoder_prompt.table().shape[0] == module.backbone.kv_shape(decoder=True)[0]
    batch = next(iter(data.val_dataloader()))
    embeds, mask, _ = module.inputs(batch)
    plain = module.backbone.encoder_hidden_states(embeds, mask)
    with torch.no_grad():
        # the hook really feeds the encoder: masking the prefix out gives the plain encoder back
        module._encoder_cache = module.deep_prompt.cache(embeds.shape[0], embeds.dtype)
        masked = module.backbone.encoder_hidden_states(embeds, torch.cat([torch.zeros_like(mask[:, :3]), mask], 1))
        module._encoder_cache = None
        prefixed = module.encode(embeds, mask)
        torch.testing.assert_close(masked, plain, rtol=0, atol=1e-5)
        assert not torch.allclose(prefixed, plain)
        rows = batch["decoder_example"]
        args = (prefixed[rows], mask[rows], batch["decoder_input_ids"], batch["decoder_attention_mask"])
        with_decoder_prefix = module.decode(*args)
        without = module.backbone.seq2seq_logits(*args)
        assert with_decoder_prefix.shape == without.shape
        assert not torch.allclose(with_decoder_prefix, without)


def test_prefix_checkpoint_reloads_onto_a_fresh_module(sample_data, tmp_path):
    module, data = build(sample_data, ["method=prefix_tuning", "model=tiny-llama", "task=cb"])
    module.eval()
    module.deep_prompt.fold()
    batch = next(iter(data.val_dataloader()))
    trainer = L.Trainer(logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "prefix.ckpt")
    fresh, _ = build(sample_data, ["method=prefix_tuning", "model=tiny-llama", "task=cb", "seed=9"])
    fresh.eval()
    checkpoint = torch.load(tmp_path / "prefix.ckpt", weights_only=True)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=False)
    with torch.no_grad():
        assert torch.equal(module.predict(batch), fresh.predict(batch))
        torch.testing.assert_close(module(batch), fresh(batch), rtol=0, atol=0)


def test_prefix_tuning_peft_folder_loads_with_peft_and_matches(sample_data, tmp_path):
    from peft import PeftModel

    module, _ = build(sample_data, ["method=prefix_tuning", "model=tiny-gpt2", "task=cb", "method.prompt_length=4"])
    module.eval()
    module.save_peft(tmp_path / "peft")
    fresh = load_backbone(module.cfg.model).model.eval()
    peft_model = PeftModel.from_pretrained(fresh, tmp_path / "peft").eval()
    ids = module.backbone.tokenizer("Ann bought a red car in Lima.", return_tensors="pt").input_ids
    with torch.no_grad():
        ours = module.backbone.model(
            input_ids=ids,
            attention_mask=torch.ones(1, 4 + ids.shape[1], dtype=torch.long),
            cache=module.deep_prompt.cache(1, torch.float32),
        ).logits
        theirs = peft_model(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


class Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize(
    "method,model,task",
    [
        ("prefix_tuning", "tiny-gpt2", "rte"),
        ("prefix_tuning", "tiny-t5", "rte"),
        ("ptuning_v2", "tiny-bert", "rte"),
        ("ptuning_v2", "tiny-llama", "conll03"),
        ("ptuning", "tiny-gpt2", "rte"),
    ],
)
def test_loss_falls_on_an_overfit_set(train, tmp_path, method, model, task):
    recorder = Losses()
    overrides = [
        f"method={method}",
        f"model={model}",
        f"task={task}",
        "data.train_size=8",
        "data.batch_size=8",
        "trainer.max_steps=30",
    ]
    if method == "ptuning":
        overrides.append("method.lr=1e-2")  # the default 1e-3 is for real models and many steps
    if model != "tiny-t5":  # as for prompt tuning: a random tiny model needs wider weights to listen to a prompt
        overrides.append("+model.arch_kwargs.initializer_range=0.2")
    train(overrides, tmp_path, callbacks=[recorder])
    first, last = sum(recorder.losses[:5]) / 5, sum(recorder.losses[-5:]) / 5
    assert last < 0.8 * first, f"loss did not fall: {first:.4f} -> {last:.4f}"


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt2", "tiny-t5"])
def test_every_layers_prefix_acts(sample_data, model):
    method = "prefix_tuning"
    module, data = build(sample_data, [f"method={method}", f"model={model}", "task=cb", "method.reparam_hidden=0"])
    module.eval()
    batch = next(iter(data.val_dataloader()))
    layers, _, _ = module.backbone.kv_shape()
    with torch.no_grad():
        base = module(batch)
        for k in range(layers):
            table = module.deep_prompt.prefix.view(module.hp.prompt_length, layers, -1)
            saved = table[:, k].clone()
            table[:, k] += 1.0  # perturb layer k's keys and values only
            assert not torch.allclose(module(batch), base), f"layer {k}'s prefix has no effect"
            table[:, k] = saved
        torch.testing.assert_close(module(batch), base, rtol=0, atol=0)


@pytest.mark.parametrize("method,model", [("ptuning_v2", "tiny-bert"), ("prefix_tuning", "tiny-t5")])
def test_prefix_dropout_acts_in_training_only(sample_data, method, model):
    """method.prefix_dropout (P-Tuning v2's dropout on its past key/values): in training two forwards
    of one batch differ, one mask per row; in evaluation the output is the undropped one."""
    task = "rte" if method == "ptuning_v2" else "cb"
    base = [f"method={method}", f"model={model}", f"task={task}", "method.prompt_length=4"]
    module, data = build(sample_data, [*base, "method.prefix_dropout=0.5"])
    plain, _ = build(sample_data, base)
    plain.load_state_dict(module.state_dict())  # the same prefixes and head (dropout has no weights)
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        module.train()
        first, second = module(batch), module(batch)
        assert not torch.allclose(first, second)
        cache = module.deep_prompt.cache(2, torch.float32)
        keys = cache.layers[0].keys
        assert not torch.equal(keys[0], keys[1])  # each row its own mask
        module.eval(), plain.eval()
        torch.testing.assert_close(module(batch), plain(batch), rtol=0, atol=0)


def test_prefix_dropout_out_of_range_is_one_line(sample_data):
    cfg = compose(["method=ptuning_v2", "model=tiny-bert", "method.prefix_dropout=1.0", f"data.dir={sample_data}"])
    with pytest.raises(ConfigError, match=r"method.prefix_dropout must be in \[0, 1\), got 1.0"):
        validate(cfg)


def test_a_run_stored_before_prefix_dropout_existed_still_evaluates(train, sample_data, tmp_path):
    """A weights file whose recorded config predates a setting (no method.prefix_dropout) rebuilds
    with the setting's neutral value: eval gives the run's own score."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from promptscale.evaluate import evaluate, weights_of

    record = train(["method=ptuning_v2", "model=tiny-bert", "task=rte", "method.prompt_length=4"], tmp_path)
    weights = weights_of(tmp_path / "run")
    with safe_open(weights, framework="pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["config"])
    del config["method"]["prefix_dropout"]
    save_file(load_file(weights), weights, metadata={**metadata, "config": json.dumps(config)})
    result = evaluate(tmp_path / "run", [f"data.dir={sample_data}"])
    assert result["score"] == pytest.approx(record["score"])
