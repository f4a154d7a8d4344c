"""The reference side of each timed pair: the bare Hugging Face model (PEFT where PEFT has the
method) in a plain PyTorch loop with promptscale's loss, (a) with full logits and (b) with logits
at the answer positions only."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.machine import autocast

# ---- the reference ---------------------------------------------------------------------------
ADAPTER_POINTS = ("self_attn.o_proj", "mlp.down_proj", "attn.c_proj", "mlp.c_proj")


class _RefAdapter(nn.Module):
    def __init__(self, d: int, m: int):
        super().__init__()
        self.down, self.up = nn.Linear(d, m), nn.Linear(m, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(torch.relu(self.down(h)))


def build_reference(cfg, tokenizer, device: torch.device):
    """(model, optimizer, description): the bare HF model with the method's trainable part."""
    from promptscale.models import load_model

    name, hp = cfg.method.name, cfg.method
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model, tokenizer)
    d = model.get_input_embeddings().embedding_dim
    if name == "finetune":
        model.requires_grad_(True)
        what = "bare model, every weight trains"
    elif name == "adapter":
        model.requires_grad_(False)
        adapters = nn.ModuleList()
        for module_name, module in list(model.named_modules()):
            if module_name.endswith(ADAPTER_POINTS):
                adapter = _RefAdapter(d, hp.bottleneck)
                adapters.append(adapter)
                module.register_forward_hook(lambda mod, args, out, a=adapter: a(out))
        model.bench_adapters = adapters
        if hp.train_layer_norms:
            for module in model.base_model.modules():
                if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm")):
                    module.requires_grad_(True)
        what = f"bare model + {len(adapters)} bottleneck hooks (m={hp.bottleneck}), norms train"
    else:
        import peft

        causal = peft.TaskType.CAUSAL_LM
        if name == "lora":
            config = peft.LoraConfig(
                task_type=causal,
                r=hp.r,
                lora_alpha=hp.alpha,
                lora_dropout=hp.dropout,
                fan_in_fan_out=getattr(model.config, "model_type", None) == "gpt2",
            )
            what = f"PEFT LoraConfig(r={hp.r})"
        elif name == "prompt_tuning":
            config = peft.PromptTuningConfig(task_type=causal, num_virtual_tokens=hp.prompt_length)
            what = f"PEFT PromptTuningConfig({hp.prompt_length} tokens)"
        elif name == "prefix_tuning":
            config = peft.PrefixTuningConfig(
                task_type=causal,
                num_virtual_tokens=hp.prompt_length,
                prefix_projection=True,
                encoder_hidden_size=hp.reparam_hidden,
            )
            what = f"PEFT PrefixTuningConfig({hp.prompt_length} tokens, MLP {hp.reparam_hidden})"
        elif name == "ptuning_v2":
            config = peft.PrefixTuningConfig(
                task_type=causal, num_virtual_tokens=hp.prompt_length, prefix_projection=False
            )
            what = f"PEFT PrefixTuningConfig({hp.prompt_length} tokens, no projection)"
        elif name == "ptuning":
            config = peft.PromptEncoderConfig(
                task_type=causal,
                num_virtual_tokens=hp.prompt_length,
                encoder_reparameterization_type="MLP",
                encoder_hidden_size=hp.encoder_hidden or d,
            )
            what = f"PEFT PromptEncoderConfig(MLP, {hp.prompt_length} tokens)"
        else:
            raise ValueError(f"bench: no reference for method {name}")
        model = peft.get_peft_model(model, config)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)  # promptscale's
    return model, optimizer, what


# PEFT prepends these methods' virtual tokens to the input (prefix methods pass key/value caches instead)
PEFT_PREPENDS = {"prompt_tuning", "ptuning"}


def reference_inputs(batch: dict, method: str, virtual: int = 0) -> dict:
    """The batch as a PEFT user feeds it: tokens and mask (P-Tuning's [P] positions dropped, since
    PEFT adds its ``virtual`` tokens itself, so both sides see the same number of positions), and
    each scored position moved to where it sits in the reference's logits."""
    from promptscale.data.encoding import VIRTUAL_ID

    ids, mask = batch["input_ids"], batch["attention_mask"]
    slot_pos = batch["slot_pos"]
    if method == "ptuning":
        placeholders = (ids == VIRTUAL_ID).long().cumsum(1)  # [P]s at or before each position
        slot_pos = slot_pos - placeholders.gather(1, slot_pos)
        keep = ids != VIRTUAL_ID
        ids, mask = ids[keep].view(ids.shape[0], -1), mask[keep].view(ids.shape[0], -1)
    if method in PEFT_PREPENDS:
        slot_pos = slot_pos + virtual
    names = ("cand_row", "cand_tokens", "cand_mask", "labels")
    return {"input_ids": ids, "attention_mask": mask, "slot_pos": slot_pos, **{k: batch[k] for k in names}}


def candidate_loss(logp_at, inputs: dict) -> torch.Tensor:
    """Rank classification as promptscale defines it: a candidate's score is the sum of its tokens'
    log-probabilities at its slot positions, the loss the cross-entropy over the candidates.
    ``logp_at(rows, positions)``: log-probabilities [..., vocab] at those (row, position) pairs."""
    rows = inputs["cand_row"].clamp(min=0)  # [B, C]
    positions = inputs["slot_pos"][rows]  # [B, C, W]
    logp = logp_at(rows[..., None].expand_as(positions), positions)  # [B, C, W, V]
    token_logp = logp.gather(-1, inputs["cand_tokens"][..., None]).squeeze(-1) * inputs["cand_mask"]
    scores = token_logp.sum(-1).masked_fill(inputs["cand_row"] < 0, float("-inf"))
    return nn.functional.cross_entropy(scores, inputs["labels"])


def reference_loss(model, inputs: dict, answer_only: bool) -> torch.Tensor:
    """(a) ``answer_only=False``: what a PEFT user writes first: logits for the whole vocabulary at
    every position, log-softmax, gather the candidates' tokens. (b) ``answer_only=True``: the same,
    with transformers' ``logits_to_keep`` (the positions any row scores) so that the LM head and the
    log-softmax run at the answer positions only, as promptscale's do."""
    batch_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    if not answer_only:
        logp = model(**batch_inputs).logits.float().log_softmax(-1)
        return candidate_loss(lambda r, p: logp[r, p], inputs)
    kept = torch.unique(inputs["slot_pos"])  # sorted
    logp = model(**batch_inputs, logits_to_keep=kept).logits.float().log_softmax(-1)
    return candidate_loss(lambda r, p: logp[r, torch.searchsorted(kept, p)], inputs)


def reference_step(model, optimizer, inputs, device, dtype, answer_only: bool) -> None:
    with autocast(device, dtype):
        loss = reference_loss(model, inputs, answer_only)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def param_counts(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
