"""A decoder's input starts as its tokenizer starts a text (Gemma's and Llama's <bos>; nothing
for GPT-2 and SmolLM2), as lm-evaluation-harness reads a context: every row of every head, ICL's
demonstration block (once, before the demonstrations) and chain-of-thought's generation input.
tiny-gemma3's tokenizer puts <bos> first, as Gemma's does."""

import pytest
import torch

from conftest import build_run
from promptscale.families import FAMILIES, family
from promptscale.models import tiny_tokenizer


def in_order(module, data) -> torch.Tensor:
    """Every evaluation example's scores, in the split's order (evaluation runs longest first)."""
    with torch.no_grad():
        batches = [(b["idx"], module(b)) for b in data.val_dataloader()]
    idx = torch.cat([i for i, _ in batches])
    return torch.cat([s for _, s in batches])[idx.argsort()]


def build(sample_data, overrides):
    _, module, data = build_run(sample_data, ["data.eval_size=6", "data.train_size=8", *overrides])
    return module, data


def test_the_frame_is_what_the_tokenizer_puts_around_a_text():
    with_bos, plain = tiny_tokenizer("bpe-bos"), tiny_tokenizer("bpe")
    assert family("decoder").frame(with_bos) == ([with_bos.bos_token_id], [])
    assert with_bos("a text")["input_ids"][0] == with_bos.bos_token_id
    assert family("decoder").frame(plain) == ([], [])  # GPT-2's tokenizer adds nothing
    bert = tiny_tokenizer("wordpiece")
    assert family("encoder").frame(bert) == ([bert.cls_token_id], [bert.sep_token_id])
    t5 = tiny_tokenizer("unigram")
    assert family("encdec").frame(t5) == ([], [t5.eos_token_id])
    # no family frames an input with more specials than check_fit counts before a tokenizer loads
    assert all(
        sum(map(len, f.frame(tok))) <= f.max_specials
        for f in FAMILIES.values()
        for tok in (with_bos, plain)
        if not f.cloze and not f.seq2seq
    )


def test_only_the_family_objects_branch_on_a_family_name():
    """Architecture: methods, data and models ask the family object (promptscale.families)."""
    import re
    from pathlib import Path

    import promptscale

    root = Path(promptscale.__file__).parent
    pattern = re.compile(r"family\s*(==|!=)|family\)?\s+(not\s+)?in\s+[(\[{]|\.family\s*==")
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "families.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


@pytest.mark.parametrize(
    "overrides",
    [["task=cb"], ["task=copa"], ["task=cb", "method.head=cls"], ["task=conll03", "method=finetune"]],
    ids=["cb-slots", "copa-rows", "cb-cls", "conll-tags"],
)
def test_every_row_starts_with_bos(sample_data, overrides):
    module, data = build(sample_data, ["model=tiny-gemma3", "method=finetune", *overrides])
    bos = data.tokenizer.bos_token_id
    for batch in data.val_dataloader():
        assert (batch["input_ids"][:, 0] == bos).all()
        assert (batch["input_ids"][:, 1:] != bos).all()
        if "word_pos" in batch:  # the tags sit on the words, one position after <bos>
            assert batch["word_pos"][batch["word_pos"] >= 0].min() >= 1
            assert (batch["tag_labels"][:, 0] < 0).all()


@pytest.mark.parametrize("task", ["cb", "copa"])
def test_scores_are_the_log_probs_after_bos(sample_data, task):
    """Each candidate's score is log p(candidate | <bos> prompt) computed directly on the model."""
    module, data = build(sample_data, ["model=tiny-gemma3", "method=icl", "method.shots=0", f"task={task}"])
    module.prepare(data)
    enc, model = data.encoder, module.backbone.model
    scores = in_order(module, data)
    with torch.no_grad():
        for i, ex in enumerate(data.eval_examples):
            row = enc.encode(ex, i)
            for c, cand in enumerate(row["cand_ids"]):
                ids = torch.tensor([[data.tokenizer.bos_token_id, *row["prompt_ids"], *cand]])
                logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
                start = 1 + len(row["prompt_ids"])
                direct = sum(logp[start - 1 + t, tok].item() for t, tok in enumerate(cand))
                assert scores[i, c].item() == pytest.approx(direct, abs=1e-4)


def test_icl_block_starts_with_one_bos(sample_data):
    """<bos> once, before the demonstrations; the same scores as the whole text scored in one row."""
    module, data = build(sample_data, ["model=tiny-gemma3", "method=icl", "method.shots=2", "task=cb"])
    module.prepare(data)
    bos = data.tokenizer.bos_token_id
    assert module.demo_ids[0] == bos and bos not in module.demo_ids[1:]
    cached = in_order(module, data)
    module.hp.cache_demos = False
    module.prepare(data)
    naive = in_order(module, data)
    torch.testing.assert_close(cached, naive, rtol=0, atol=1e-5)
    enc, model = data.encoder, module.backbone.model
    row = enc.encode(data.eval_examples[0], 0)
    with torch.no_grad():
        for c, cand in enumerate(row["cand_ids"]):
            ids = torch.tensor([[*module.demo_ids, *row["prompt_ids"], *cand]])
            logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
            start = len(module.demo_ids) + len(row["prompt_ids"])
            direct = sum(logp[start - 1 + t, tok].item() for t, tok in enumerate(cand))
            assert naive[0, c].item() == pytest.approx(direct, abs=1e-4)


def test_chain_of_thought_generates_after_bos(sample_data, monkeypatch):
    module, data = build(sample_data, ["model=tiny-gemma3", "method=cot", "method.shots=0", "task=cb"])
    seen = []
    real = module.backbone.model.generate
    monkeypatch.setattr(
        module.backbone.model, "generate", lambda **kw: seen.append(kw["input_ids"][0].tolist()) or real(**kw)
    )
    module.answer(data, data.eval_examples[0])
    assert seen and all(ids[0] == data.tokenizer.bos_token_id for ids in seen)
    assert all(data.tokenizer.bos_token_id not in ids[1:] for ids in seen)
