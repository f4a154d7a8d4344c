"""P-Tuning v1: encoder-made virtual tokens sit at the template's [P] positions."""

import pytest
import torch

from conftest import build_run
from promptscale.config import validate
from promptscale.data.encoding import VIRTUAL_ID
from promptscale.errors import ConfigError
from promptscale.train import compose

TEMPLATE = 'method.template="[P] [P] {{ premise }} [P] Question: {{ hypothesis }} [P] Answer:"'


def build(sample_data, overrides):
    return build_run(sample_data, ["method=ptuning", "task=rte", "data.eval_size=4", *overrides], eval_mode=False)


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt2", "tiny-t5"])
def test_virtual_tokens_interleave_with_anchor_words(sample_data, model):
    cfg, module, data = build(sample_data, [f"model={model}", TEMPLATE])
    example = data.eval_examples[0]
    ids = data.encoder.encode(example, 0)["prompt_ids"]
    tok = module.backbone.tokenizer
    premise = data.encoder.ids(" " + example.fields["premise"])
    assert ids[:2] == [VIRTUAL_ID, VIRTUAL_ID]
    assert ids[2 : 2 + len(premise)] == premise  # the premise follows the first two [P]s
    assert ids[2 + len(premise)] == VIRTUAL_ID
    assert ids.count(VIRTUAL_ID) == 4
    assert tok.decode([i for i in ids if i >= 0]).replace(" ", "").lower().endswith("answer:")

    batch = next(iter(data.val_dataloader()))
    embeds, _, offset = module.inputs(batch)
    virtual = batch["input_ids"] == VIRTUAL_ID
    tokens = module.prompt_encoder()
    assert offset == 0
    for row in range(virtual.shape[0]):
        assert torch.equal(embeds[row][virtual[row]], tokens)
        words = batch["input_ids"][row][~virtual[row]]
        assert torch.equal(embeds[row][~virtual[row]], module.backbone.embed(words))


def test_without_template_prompt_length_tokens_go_first(sample_data):
    cfg, module, data = build(sample_data, ["model=tiny-gpt2", "method.prompt_length=3"])
    ids = data.encoder.encode(data.eval_examples[0], 0)["prompt_ids"]
    assert ids[:3] == [VIRTUAL_ID] * 3 and VIRTUAL_ID not in ids[3:]


def test_mlp_encoder_parameter_count_is_closed_form(sample_data):
    cfg, module, _ = build(sample_data, ["model=tiny-gpt2", "method.encoder=mlp", "method.prompt_length=5"])
    d = module.backbone.hidden_size
    assert module.parameter_counts()["trained_params"] == 5 * d + (d * d + d) + (d * d + d)


@pytest.mark.parametrize("freeze", [True, False])
def test_training_moves_the_encoder_and_the_lm_only_when_asked(train, tmp_path, freeze):
    captured = {}

    class Snapshot:
        def setup(self, trainer, module, stage):
            captured["before"] = {k: v.clone() for k, v in module.backbone.state_dict().items()}
            captured["encoder"] = {k: v.clone() for k, v in module.prompt_encoder.state_dict().items()}
            captured["module"] = module

    import lightning as L

    class Callback(Snapshot, L.Callback):
        pass

    record = train(
        [
            "method=ptuning",
            "model=tiny-gpt2",
            "task=rte",
            f"method.freeze_lm={str(freeze).lower()}",
            "method.lm_lr=1e-2",
            "trainer.max_steps=3",
        ],
        tmp_path,
        callbacks=[Callback()],
    )
    module = captured["module"]
    after = module.backbone.state_dict()
    same = all(torch.equal(v, after[k]) for k, v in captured["before"].items())
    assert same == freeze
    assert any(not torch.equal(v, module.prompt_encoder.state_dict()[k]) for k, v in captured["encoder"].items())
    assert record["status"] == "finished"


def test_sequence_labeling_is_refused_before_loading(sample_data):
    cfg = compose(["method=ptuning", "task=conll03", f"data.dir={sample_data}"])
    with pytest.raises(ConfigError, match="no template"):
        validate(cfg)


def test_template_without_virtual_token_is_refused(sample_data):
    cfg = compose(["method=ptuning", f"data.dir={sample_data}", 'method.template="{{ premise }} {{ hypothesis }}"'])
    with pytest.raises(ConfigError, match=r"no \[P\]"):
        validate(cfg)


def test_checkpoint_holds_the_prompt_encoder_and_reloads_to_identical_predictions(sample_data, tmp_path):
    import lightning as L

    cfg, module, data = build(sample_data, ["model=tiny-gpt2", TEMPLATE])
    module.eval()
    trainer = L.Trainer(logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "ptuning.ckpt")
    state = torch.load(tmp_path / "ptuning.ckpt", weights_only=True)["state_dict"]
    assert state and all(key.startswith("prompt_encoder.") for key in state)
    _, fresh, _ = build(sample_data, ["model=tiny-gpt2", TEMPLATE, "seed=5"])
    fresh.eval()
    fresh.load_state_dict(state, strict=False)
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        torch.testing.assert_close(module(batch), fresh(batch), rtol=0, atol=0)
