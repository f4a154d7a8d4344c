"""``make bench`` / ``python -m promptscale.bench``: speed, memory and storage of every trainable
method, against a plain reference loop and the hardware floor, written to ``BENCHMARKS.md``.

For each model (default: the packaged SmolLM2-135M; batch 8, 128 tokens; fp32 on CPU, bf16 autocast
on a GPU) and each trainable method:

* **promptscale step**: forward + loss + backward + optimizer step (+ scheduler step) + zero_grad of
  the method's LightningModule, with its own ``configure_optimizers``, on a batch from the
  TaskDataModule collator (RTE inputs long enough to be truncated to exactly the sequence length);
* **reference steps**: the same batch through the bare Hugging Face model in a plain PyTorch loop
  with AdamW and the same loss (rank classification over the candidates), with PEFT where PEFT has
  the method (LoRA, prompt tuning, prefix tuning, P-tuning's MLP encoder; P-Tuning v2 as PEFT
  prefix tuning without reparameterization), a minimal bottleneck-adapter hook for adapters,
  ``requires_grad`` on all weights for fine-tuning: (a) with logits over the vocabulary at every
  position, as a PEFT user first writes it, and (b) with logits at the answer positions only
  (``logits_to_keep``), the same work promptscale does: promptscale / (b) is its overhead. The
  three alternate in rounds after warm-up steps in one process; each is the median of the rounds,
  a ratio the median of the per-round ratios;
* **floor**: a no-grad forward of the bare model on the batch, and step / forward;
* peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on a GPU) from just before the
  model is built through its first training step, trainable parameters, optimizer-state bytes,
  checkpoint bytes (the Lightning state dict after the method's ``on_save_checkpoint``), and the
  time the train loader and collation take per batch as a share of the step.

Plus in-context learning with the cached demonstration prefix vs the full prompt, a 4-run
prompt-length sweep with and without backbone reuse, and the cold start of ``promptscale-train``.
Where a target is missed, one step of each side is profiled (torch.profiler) and the report says
where the time goes. ``--quick`` is a smoke run (tiny-gpt2, batch 2, 32 tokens, one pair).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

PROMPT_TOKENS = 20  # soft prompt / prefix / P-Tuning virtual tokens
# method -> overrides (the settings the issue benchmarks); {p}: the number of virtual tokens
METHODS = {
    "finetune": [],
    "prompt_tuning": ["method.prompt_length={p}"],
    "prefix_tuning": ["method.prompt_length={p}"],
    "ptuning": ["method.encoder=mlp", "method.prompt_length={p}"],
    "ptuning_v2": ["method.head=lm"],  # scored by the LM head at the answer slot, like the others
    "adapter": [],
    "lora": ["method.r=8"],
}


def prompt_tokens(seq_len: int) -> int:
    """20, or fewer where P-Tuning's [P]s would not fit among the task's words (short --seq-len)."""
    return min(PROMPT_TOKENS, seq_len // 4)


def method_overrides(method: str, seq_len: int) -> list[str]:
    return [o.format(p=prompt_tokens(seq_len)) for o in METHODS[method]]


QUICK_METHODS = ["finetune", "prompt_tuning", "prefix_tuning", "lora"]
FROZEN_BACKBONE = {"prompt_tuning", "prefix_tuning", "ptuning", "ptuning_v2", "adapter", "lora"}
PROMPT_METHODS = ["prompt_tuning", "prefix_tuning", "ptuning", "ptuning_v2"]
SWEEP_LENGTHS = [5, 10, 20, 40]
DATA_SHARE_TARGET = 0.05
MIN_NOISE = 0.03  # half the spread of the per-round ratios is reported, at least this
OVERHEAD_TARGET = 1.05  # promptscale / reference (b): the wrapper's overhead on the same work

# dense bf16 tensor-core peak FLOP/s by device name (most specific first; matched as substrings)
PEAK_BF16_FLOPS = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
]


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(seconds: float = 1.0) -> float:
    """Cores other processes keep busy now (system-wide CPU use over ``seconds``)."""
    import psutil

    return psutil.cpu_percent(interval=seconds) / 100 * (os.cpu_count() or 1)


def auto_threads() -> int:
    """torch's default intra-op threads, minus the cores other processes keep busy: OpenMP threads
    that wait on a descheduled sibling make a step many times slower on a shared machine."""
    return max(1, min(torch.get_num_threads(), cores() - round(busy_cores())))


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---- hardware --------------------------------------------------------------------------------
def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_bf16_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def hardware_line(device: torch.device, dtype: str) -> str:
    import peft
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
    cpu = f"CPU: {cores()} cores ({cpu_name()}), torch threads: {torch.get_num_threads()}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
        return f"{gpu}; {cpu}; {versions}; dtype {dtype}"
    return f"{cpu}; {platform.system()} {platform.machine()}; {versions}; dtype {dtype}"


# ---- timing and memory -----------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def release_memory() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory above the level at ``start()``: ``max_memory_allocated`` on a GPU; on CPU the
    kernel's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs), or a
    sampling thread (psutil, every 2 ms) where that reset is not allowed."""

    def __init__(self, device: torch.device):
        self.device = device
        self._stop = threading.Event()
        self._thread = None
        self._sampled = 0

    def start(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = _rss()
        self.hwm = False
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm = self._vm_hwm() is not None
        if not self.hwm:
            self._sampled = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def _vm_hwm() -> int | None:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _rss())
            time.sleep(0.002)

    def stop(self) -> int:
        if self.device.type == "cuda":
            sync(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self.base)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            return max(0, self._sampled - self.base)
        return max(0, (self._vm_hwm() or 0) - self.base)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- data ------------------------------------------------------------------------------------
def write_long_rte(root: Path, samples: Path, n_train: int, words: int) -> Path:
    """RTE files whose premises (the task's truncated field) are long enough that every prompt is
    cut to the token budget: sample premises joined until each has ``words`` words."""
    premises, hypotheses = [], []
    for line in (samples / "fewglue" / "RTE" / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        premises.append(record["premise"])
        hypotheses.append((record["hypothesis"], record["label"]))
    folder = root / "fewglue" / "RTE"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_train):
        text, k = [], i
        while sum(len(t.split()) for t in text) < words:
            text.append(premises[k % len(premises)])
            k += 1
        hypothesis, label = hypotheses[i % len(hypotheses)]
        records.append({"premise": " ".join(text), "hypothesis": hypothesis, "label": label, "idx": i})
    for split in ("train", "dev32", "val"):
        rows = records if split == "train" else records[:4]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def fixed_length_data(cfg, backbone, seq_len: int):
    """The TaskDataModule and its first train batch, with ``data.max_length`` set so that the
    collated batch is exactly ``seq_len`` tokens wide."""
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.data.encoding import VIRTUAL_ID, VIRTUAL_TOKEN

    for _ in range(4):
        data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
        data.read()
        data.attach(backbone.tokenizer, cfg.model.family, cfg.method.head)
        data.setup()
        batch = next(iter(data.train_dataloader()))
        width = batch["input_ids"].shape[1]
        if width == seq_len:
            virtual = (batch["input_ids"] == VIRTUAL_ID).sum(1)
            if not torch.all(virtual == cfg.task.template.count(VIRTUAL_TOKEN)):
                raise SystemExit(
                    f"bench: {seq_len} tokens leave no room for the task's words beside P-Tuning's [P]s; use a larger --seq-len"
                )
            return data, batch
        cfg.data.max_length += seq_len - width
    raise RuntimeError(f"bench: could not collate batches of exactly {seq_len} tokens (got {width})")


def data_seconds_per_batch(data, device: torch.device, epochs: int = 3) -> float:
    """Train-loader iteration (arrow rows + collation + the copy to the device), per batch."""
    per_batch = []
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for batch in data.train_dataloader():
            to_device(batch, device)
            n += 1
        sync(device)
        per_batch.append((time.perf_counter() - start) / max(n, 1))
    return statistics.median(per_batch)


# ---- promptscale's side ----------------------------------------------------------------------
def build_ours(cfg, device: torch.device, backbone=None):
    """The method's LightningModule as a fit starts it, and its optimizer and scheduler."""
    from promptscale.methods import method_class
    from promptscale.models import load_backbone

    torch.manual_seed(cfg.seed)
    backbone = backbone if backbone is not None else load_backbone(cfg.model)
    module = method_class(cfg.method.name)(cfg, backbone).to(device)
    module.on_fit_start()
    # configure_optimizers reads trainer.estimated_stepping_batches (linear schedules)
    module.trainer = SimpleNamespace(estimated_stepping_batches=1000)
    try:
        conf = module.configure_optimizers()
    finally:
        module.trainer = None
    return module, conf["optimizer"], conf["lr_scheduler"]["scheduler"]


def our_step(module, optimizer, scheduler, batch, device, dtype) -> None:
    with autocast(device, dtype):
        loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def checkpoint_info(module) -> dict:
    """Bytes on disk of the Lightning checkpoint's state dict as the method trims it, and whether
    it holds exactly the trainable parameters."""
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    keys = set(checkpoint["state_dict"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.ckpt"
        torch.save(checkpoint, path)
        size = path.stat().st_size
    if keys == trainable:
        holds = "trainable only"
    elif trainable <= keys and len(trainable) == len(list(module.parameters())):
        holds = "all weights"
    else:
        holds = f"{len(keys & trainable)} trainable + {len(keys - trainable)} other"
    return {"bytes": size, "holds": holds, "trainable_only": keys == trainable}


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
    optimizer = torch.optim.AdamW(params, lr=hp.lr)
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


# ---- profiles --------------------------------------------------------------------------------
def profile_ops(fn, device: torch.device) -> dict[str, tuple[float, int]]:
    """op -> (self time ms, calls) over one call of ``fn`` (torch.profiler; device time on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return {e.key: (getattr(e, attr, 0.0) / 1000, e.count) for e in prof.key_averages()}


def profile_data(data, device) -> list[tuple[str, float, int]]:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for batch in data.train_dataloader():
        to_device(batch, device)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:6]  # by own time
    return [(f"{Path(f).name}:{line} {fn}", tt * 1000, nc) for (f, line, fn), (cc, nc, tt, ct, _) in rows]


# ---- one model -------------------------------------------------------------------------------
@dataclass
class MethodResult:
    method: str
    ours: list[float]
    ref: list[float]  # reference (a): full logits, one time per round
    ref_b: list[float]  # reference (b): logits at the answer positions only
    data_s: float
    rows: int
    ours_memory: int
    ref_memory: int
    trainable: int
    total: int
    ref_trainable: int
    opt_bytes: int
    ref_opt_bytes: int
    ckpt: dict
    final_ckpt: dict
    reference: str
    optimizer: str
    profile: dict = field(default_factory=dict)

    @property
    def ours_s(self) -> float:
        return statistics.median(self.ours)

    @property
    def ref_s(self) -> float:
        return statistics.median(self.ref)

    @property
    def ref_b_s(self) -> float:
        return statistics.median(self.ref_b)

    def ratios(self, ref: list[float]) -> list[float]:
        """promptscale / reference, per round (each round ran both back to back)."""
        return [o / r for o, r in zip(self.ours, ref)]

    @property
    def ratio(self) -> float:  # promptscale / (a)
        return statistics.median(self.ratios(self.ref))

    @property
    def ratio_b(self) -> float:  # promptscale / (b): the wrapper's overhead
        return statistics.median(self.ratios(self.ref_b))

    @property
    def noise_b(self) -> float:
        """Half the spread of the per-round ratios to (b), at least MIN_NOISE."""
        ratios = self.ratios(self.ref_b)
        return max(MIN_NOISE, (max(ratios) - min(ratios)) / 2)

    @property
    def data_share(self) -> float:
        return self.data_s / self.ours_s


def bench_method(args, model_name: str, method: str, data_root: Path, cache_dir: Path, device, dtype) -> MethodResult:
    from promptscale.config import validate
    from promptscale.models import load_tokenizer
    from promptscale.train import compose

    cfg = compose(
        [
            f"model={model_name}", f"method={method}", "task=rte", "logger=none", f"data.dir={data_root}",
            f"data.batch_size={args.batch_size}", f"data.max_length={args.seq_len + 1}", f"data.cache_dir={cache_dir}",
            *method_overrides(method, args.seq_len),
        ]
    )  # fmt: skip
    validate(cfg)
    data, batch = fixed_length_data(cfg, SimpleNamespace(tokenizer=load_tokenizer(cfg.model)), args.seq_len)
    batch = to_device(batch, device)
    memory = PeakMemory(device).start()
    module, optimizer, scheduler = build_ours(cfg, device)
    our = lambda: our_step(module, optimizer, scheduler, batch, device, dtype)  # noqa: E731
    our()  # the first warm-up step: the optimizer state is allocated here
    ours_memory = memory.stop()
    opt_bytes = optimizer_state_bytes(optimizer)

    memory = PeakMemory(device).start()
    ref_model, ref_opt, reference = build_reference(cfg, module.backbone.tokenizer, device)
    inputs = reference_inputs(batch, method, prompt_tokens(args.seq_len))
    ref = lambda: reference_step(ref_model, ref_opt, inputs, device, dtype, answer_only=False)  # noqa: E731
    ref_b = lambda: reference_step(ref_model, ref_opt, inputs, device, dtype, answer_only=True)  # noqa: E731
    ref()
    ref_memory = memory.stop()
    ref_opt_bytes = optimizer_state_bytes(ref_opt)

    for _ in range(args.warmup - 1):
        our()
        ref()
        ref_b()
    ours_t, ref_t, ref_b_t = [], [], []
    for _ in range(args.pairs):  # rounds of (promptscale, (a), (b)), back to back
        ours_t.append(timed(our, device))
        ref_t.append(timed(ref, device))
        ref_b_t.append(timed(ref_b, device))
    result = MethodResult(
        method=method,
        ours=ours_t,
        ref=ref_t,
        ref_b=ref_b_t,
        data_s=data_seconds_per_batch(data, device),
        rows=batch["input_ids"].shape[0],
        ours_memory=ours_memory,
        ref_memory=ref_memory,
        trainable=module.parameter_counts()["trained_params"],
        total=module.parameter_counts()["total_params"],
        ref_trainable=param_counts(ref_model)[0],
        opt_bytes=opt_bytes,
        ref_opt_bytes=ref_opt_bytes,
        ckpt=checkpoint_info(module),
        final_ckpt={},
        reference=reference,
        optimizer=type(optimizer).__name__,
    )
    missed = result.ratio_b > OVERHEAD_TARGET
    if args.profile and (missed or method == args.profile_method):
        log(
            f"{method}: profiling one step of each side"
            + (f" (ratio to (b) {result.ratio_b:.2f} > {OVERHEAD_TARGET})" if missed else "")
        )
        result.profile["ours"] = profile_ops(our, device)
        result.profile["ref"] = profile_ops(ref_b, device)
    if result.data_share > DATA_SHARE_TARGET and args.profile:
        result.profile["data"] = profile_data(data, device)
    module.on_fit_end()  # fold prefixes, merge LoRA: what a finished run keeps
    result.final_ckpt = checkpoint_info(module)
    del module, optimizer, scheduler, ref_model, ref_opt, our, ref, ref_b, batch, inputs, data
    release_memory()
    return result


def bench_floor(args, model_name: str, data_root: Path, cache_dir: Path, device, dtype) -> dict:
    """No-grad forward of the bare model on the fine-tuning batch: with the LM head over every
    position (the floor the ratios use) and the transformer body alone."""
    from promptscale.config import validate
    from promptscale.models import load_backbone
    from promptscale.train import compose

    cfg = compose(
        [
            f"model={model_name}", "method=finetune", "task=rte", "logger=none", f"data.dir={data_root}",
            f"data.batch_size={args.batch_size}", f"data.max_length={args.seq_len + 1}", f"data.cache_dir={cache_dir}",
        ]
    )  # fmt: skip
    validate(cfg)
    t0 = time.perf_counter()
    backbone = load_backbone(cfg.model)
    load_s = time.perf_counter() - t0
    _, batch = fixed_length_data(cfg, backbone, args.seq_len)
    model = backbone.model.to(device).eval()
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)

    def full():
        with torch.no_grad(), autocast(device, dtype):
            model(input_ids=ids, attention_mask=mask)

    def body():
        with torch.no_grad(), autocast(device, dtype):
            model.base_model(input_ids=ids, attention_mask=mask)

    for _ in range(max(1, args.warmup)):
        full()
    runs = 2 * args.pairs + 1
    full_t = [timed(full, device) for _ in range(runs)]
    body_t = [timed(body, device) for _ in range(runs)]
    out = {
        "forward_s": statistics.median(full_t),
        "body_s": statistics.median(body_t),
        "params": sum(p.numel() for p in model.parameters()),
        "load_s": load_s,
        "rows": ids.shape[0],
    }
    del model, backbone
    release_memory()
    return out


# ---- in-context learning ---------------------------------------------------------------------
def bench_icl(args, model_name: str, samples: Path, cache_dir: Path, device, dtype) -> dict:
    from promptscale.config import validate
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.methods.icl import ICL
    from promptscale.models import load_backbone
    from promptscale.train import compose

    cfg = compose(
        [
            f"model={model_name}", "method=icl", "method.shots=4", "task=rte", "logger=none", f"data.dir={samples}",
            f"data.eval_size={args.icl_examples}", f"data.eval_batch_size={args.batch_size}", f"data.cache_dir={cache_dir}",
        ]
    )  # fmt: skip
    validate(cfg)
    if cfg.model.family != "decoder":
        raise SystemExit(f"bench: the ICL comparison needs a decoder-only model, not {model_name}")
    data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
    data.read()
    ICL.check_data(cfg, data)
    module = ICL(cfg, load_backbone(cfg.model)).to(device).eval()
    data.attach(module.backbone.tokenizer, cfg.model.family, cfg.method.head)
    data.setup()

    def evaluate(cached: bool):
        module.hp.cache_demos = cached
        preds = []
        with torch.no_grad(), autocast(device, dtype):
            module.prepare(data)  # the demonstrations' encoding (cached path) counts
            for batch in data.val_dataloader():
                preds.append(module.predict(to_device(batch, device)))
        sync(device)
        return torch.cat(preds).cpu()

    evaluate(True)  # warm-up
    cached_t, full_t = [], []
    agree = []
    for _ in range(args.pairs):
        start = time.perf_counter()
        cached = evaluate(True)
        cached_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        full = evaluate(False)
        full_t.append(time.perf_counter() - start)
        agree.append(bool(torch.equal(cached, full)))
    if dtype == "fp32":
        assert all(agree), "ICL: the cached demonstration prefix changed a prediction"
    first = data.eval_set[0]
    out = {
        "examples": len(data.eval_examples),
        "demo_tokens": len(module.demo_ids),
        "query_tokens": statistics.mean(len(data.eval_set[i]["prompt_ids"]) for i in range(len(data.eval_set))),
        "cached_s": statistics.median(cached_t),
        "full_s": statistics.median(full_t),
        "identical": all(agree),
        "candidates": len(first["cand_ids"]),
    }
    del module, data
    release_memory()
    return out


# ---- sweep with and without backbone reuse ---------------------------------------------------
def bench_sweep(args, model_name: str, data_root: Path, cache_dir: Path, device, dtype) -> dict:
    """4 prompt-tuning runs (one training step each on the benchmark batch), loading the backbone
    for each vs loading it once and building every PromptTuning module on it."""
    from promptscale.config import validate
    from promptscale.models import load_backbone, load_tokenizer
    from promptscale.train import compose

    def config(length: int):
        cfg = compose(
            [
                f"model={model_name}", "method=prompt_tuning", f"method.prompt_length={length}", "task=rte", "logger=none",
                f"data.dir={data_root}", f"data.batch_size={args.batch_size}", f"data.max_length={args.seq_len + 1}",
                f"data.cache_dir={cache_dir}",
            ]
        )  # fmt: skip
        validate(cfg)
        return cfg

    configs = {length: config(length) for length in args.sweep_lengths}  # composing is not what differs
    cfg = configs[args.sweep_lengths[0]]
    _, batch = fixed_length_data(cfg, SimpleNamespace(tokenizer=load_tokenizer(cfg.model)), args.seq_len)
    batch = to_device(batch, device)
    loads: list[float] = []

    def one_run(length: int, backbone=None) -> None:
        cfg = configs[length]
        if backbone is None:
            start = time.perf_counter()
            backbone = load_backbone(cfg.model)
            loads.append(time.perf_counter() - start)
        module, optimizer, scheduler = build_ours(cfg, device, backbone)
        for _ in range(args.sweep_steps):
            our_step(module, optimizer, scheduler, batch, device, dtype)
        sync(device)

    def separate():
        for length in args.sweep_lengths:
            one_run(length)
            release_memory()

    def reused():
        start = time.perf_counter()
        backbone = load_backbone(cfg.model)
        loads.append(time.perf_counter() - start)
        for length in args.sweep_lengths:
            one_run(length, backbone)
            release_memory()

    separate_s = timed(separate, device)
    reused_s = timed(reused, device)
    return {
        "lengths": list(args.sweep_lengths),
        "steps": args.sweep_steps,
        "separate_s": separate_s,
        "reused_s": reused_s,
        "load_s": statistics.median(loads),
    }


# ---- cold start ------------------------------------------------------------------------------
def bench_cold_start(args, model_name: str, samples: Path, tmp: Path) -> dict:
    """Fresh ``promptscale-train`` processes: ``--help``, and a one-step run whose line's
    ``startup_s`` says where the time to its first training step went (medians over repeats)."""
    cli = Path(sys.executable).parent / "promptscale-train"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "promptscale.train"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

    def run(argv: list[str]) -> float:
        start = time.perf_counter()
        done = subprocess.run(command + argv, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"bench: {' '.join(argv[:3])}... exited {done.returncode}: {done.stderr[-2000:]}")
        return elapsed

    help_s = statistics.median(run(["--help"]) for _ in range(args.cold_repeats))
    walls, startups = [], []
    for i in range(args.cold_repeats):
        run_dir = tmp / f"cold-{i}"
        overrides = [
            f"model={model_name}", "method=prompt_tuning", "task=rte", f"data.dir={samples}", "data.train_size=8",
            "data.eval_size=8", "trainer.max_steps=1", "logger=none", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}", f"data.cache_dir={tmp / f'cold-tokens-{i}'}",
        ]  # fmt: skip
        walls.append(run(overrides))
        startups.append(json.loads((run_dir / "results.jsonl").read_text().splitlines()[-1])["startup_s"])
    return {
        "model": model_name,
        "repeats": args.cold_repeats,
        "help_s": help_s,
        "run_s": statistics.median(walls),
        "startup_s": {phase: statistics.median(s[phase] for s in startups) for phase in startups[0]},
    }


# ---- sweep throughput ------------------------------------------------------------------------
def bench_throughput(args, model_name: str, samples: Path, tmp: Path) -> dict:
    """``promptscale.sweep_memory``: the same N one-step jobs in one process (``--multirun``) and as
    N separate processes; each job's wall time and peak RSS."""
    overrides = [
        f"model={model_name}", "method=prompt_tuning", "task=rte", f"data.dir={samples}", "data.train_size=8",
        "data.eval_size=8", "trainer.max_steps=1", "logger=none", "trainer.enable_progress_bar=false",
        f"data.cache_dir={tmp / 'throughput-tokens'}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    modes = {}
    for mode in ("in-process", "separate"):
        out = tmp / f"throughput-{mode}.jsonl"
        argv = [sys.executable, "-m", "promptscale.sweep_memory", "--jobs", str(args.throughput_jobs)]
        argv += ["--separate"] * (mode == "separate") + ["--json", str(out), "--sweep-dir", str(tmp / f"sweep-{mode}")]
        start = time.perf_counter()
        done = subprocess.run([*argv, *overrides], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"bench: sweep_memory ({mode}) exited {done.returncode}: {done.stderr[-2000:]}")
        jobs = [json.loads(line) for line in out.read_text().splitlines()]
        if failed := [j for j in jobs if j["status"] != "COMPLETED"]:
            raise RuntimeError(f"bench: sweep_memory ({mode}): job {failed[0]['job']} {failed[0]['status']}")
        modes[mode] = {"wall_s": wall, "jobs": jobs}
    return {"model": model_name, "n": args.throughput_jobs, **modes}


# ---- zero-shot evaluation against lm-evaluation-harness ------------------------------------------
LM_EVAL_TARGET = 0.8  # promptscale's CPU time / lm-eval's on the same evaluation (issue 16)


def bench_lm_eval(args, data_dir: Path, tmp: Path) -> dict:
    """Zero-shot rank classification of RTE val with SmolLM2-135M by lm-eval (its own rte task config,
    pointed at the same file) and by promptscale (``icl`` with 0 shots and the ``lm_eval`` pattern: the
    same prompts and continuations), both in the ``peer`` venv's Python, one process per measurement,
    alternating, batch 8, the same torch threads; CPU time per process from ``wait4`` (start-up
    included: each side is what a user runs)."""
    python = args.lm_eval_python
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    tasks = tmp / "lm_eval_tasks"
    setup = (
        "import sys; from pathlib import Path; from promptscale.peer import write_lm_eval_tasks; "
        "from promptscale.models import packaged_dir; "
        f"write_lm_eval_tasks(Path({str(tasks)!r}), Path({str(data_dir)!r}), tasks=['rte']); print(packaged_dir('smollm2-135m'))"
    )
    done = subprocess.run([python, "-c", setup], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench: the peer venv ({python}) cannot prepare lm-eval: {done.stderr[-2000:]}")
    model_dir = done.stdout.strip().splitlines()[-1]
    limit = ["--limit", str(args.lm_eval_limit)] if args.lm_eval_limit else []
    lm_eval_argv = [
        python, "-m", "lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
        "--tasks", "promptscale_rte", "--include_path", str(tasks), "--batch_size", "8", "--device", "cpu",
        "--num_fewshot", "0", *limit,
    ]  # fmt: skip
    ours_argv = [
        python, "-m", "promptscale.train", "task=rte", "method=icl", "method.shots=0", "method.pattern=lm_eval",
        "model=smollm2-135m", f"data.dir={data_dir}", "data.eval_batch_size=8", "data.max_length=4096",
        "logger=none", "trainer.enable_progress_bar=false",
        *([f"data.eval_limit={args.lm_eval_limit}"] if args.lm_eval_limit else []),
    ]  # fmt: skip
    rounds = []
    for r in range(args.lm_eval_rounds):
        run_dir = tmp / f"lm-eval-round-{r}"
        theirs = _cpu(lm_eval_argv, env, tmp / f"lm-eval-logs-{r}")
        ours = _cpu([*ours_argv, f"hydra.run.dir={run_dir}"], env, tmp / f"promptscale-logs-{r}")
        record = json.loads((run_dir / "results.jsonl").read_text().splitlines()[-1])
        rounds.append({"lm_eval": theirs, "promptscale": ours, "accuracy": record["metrics"]["accuracy"],
                       "examples": record["predictions"]["n"]})  # fmt: skip
    accuracy = re.search(r"\|acc\s*\|[^|]*\|\s*([0-9.]+)", theirs["stdout"])
    return {
        "rounds": rounds,
        "threads": args.threads,
        "lm_eval_accuracy": float(accuracy.group(1)) if accuracy else None,
    }


def _cpu(argv: list[str], env: dict, logs: Path) -> dict:
    """Run ``argv`` to the end (its output into files under ``logs``: a full pipe would stall it):
    its CPU seconds (user + system, from ``wait4``), wall seconds and stdout."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    start = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"bench: {' '.join(argv[:4])}... exited {code}: {err_path.read_text()[-2000:]}")
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": time.perf_counter() - start,
        "stdout": out_path.read_text(),
    }


# ---- the report ------------------------------------------------------------------------------
def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def num(n: int) -> str:
    return f"{n:,}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def mfu(result: MethodResult, floor: dict, tokens: int, peak: float | None) -> str:
    if peak is None:
        return "–"
    factor = 4 if result.method in FROZEN_BACKBONE else 6
    return f"{factor * floor['params'] * tokens / (result.ours_s * peak):.1%}"


def model_section(model_name: str, results: list[MethodResult], floor: dict, args, gpu: str | None = None) -> list[str]:
    """The model's tables; ``gpu``: the GPU's name (adds MFU), None on CPU."""
    forward = floor["forward_s"]
    p = prompt_tokens(args.seq_len)
    tokens = args.batch_size * args.seq_len
    peak = peak_bf16_flops(gpu) if gpu else None
    lines = [
        f"## {model_name} ({floor['params'] / 1e6:,.1f}M parameters)",
        "",
        f"Batch {args.batch_size} × {args.seq_len} tokens ({floor['rows']} rows). Floor: a no-grad forward of the bare model "
        f"on the batch takes **{forward:.4f} s** with the LM head over every position "
        f"({floor['body_s']:.4f} s for the transformer body alone); loading the backbone takes {floor['load_s']:.2f} s.",
        "",
    ]
    header = [
        "method", "promptscale s/step", "(a) full logits s/step", "ratio to (a)", "(b) answer logits s/step",
        "ratio to (b)", "ratio to forward", "examples/s",
        "peak memory (MiB)", "trainable params", "optimizer-state bytes", "checkpoint bytes", "data share",
    ]  # fmt: skip
    if gpu:
        header.append("MFU")
    rows = []
    for r in results:
        row = [
            r.method, f"{r.ours_s:.4f}", f"{r.ref_s:.4f}", f"{r.ratio:.2f}", f"{r.ref_b_s:.4f}", f"{r.ratio_b:.2f}",
            f"{r.ours_s / forward:.2f}",
            f"{args.batch_size / r.ours_s:.1f}", mib(r.ours_memory), num(r.trainable), num(r.opt_bytes),
            num(r.ckpt["bytes"]), f"{r.data_share:.1%}",
        ]  # fmt: skip
        if gpu:
            row.append(mfu(r, floor, tokens, peak))
        rows.append(row)
    lines += table(header, rows)
    lines += [
        "",
        "ratios: medians over the rounds of promptscale / reference (each round runs promptscale, (a), (b) back to "
        "back); ratio to (a) is what a user gains or loses against the PEFT loop they would write; ratio to (b) is "
        "promptscale's own overhead against the same work done by hand; ratio to forward: "
        "promptscale step / the no-grad forward; peak memory: from just before the model is built through its first "
        "training step (weights, activations, gradients, optimizer state); checkpoint: the Lightning state dict after "
        "the method's `on_save_checkpoint`; data share: train-loader iteration + collation per batch / the step.",
    ]
    if gpu:
        lines += [
            "",
            f"MFU: (6 if the backbone trains, else 4) × {floor['params']:,} parameters × {tokens:,} tokens per step / "
            f"(step time × peak dense bf16 FLOP/s of the GPU: {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'not in the table, no MFU'}).",
        ]
    lines += ["", "### The other side of each pair", ""]
    rows = [
        [
            r.method,
            r.reference,
            r.optimizer,
            f"{r.ref_s / forward:.2f}",
            mib(r.ref_memory),
            num(r.ref_trainable),
            num(r.ref_opt_bytes),
            r.ckpt["holds"],
            num(r.final_ckpt["bytes"]),
        ]  # fmt: skip
        for r in results
    ]
    lines += table(
        [
            "method", "reference", "promptscale optimizer", "reference ratio to forward", "reference peak memory (MiB)",
            "reference trainable params", "reference optimizer-state bytes", "promptscale checkpoint holds",
            "checkpoint bytes after training ends",
        ],
        rows,
    )  # fmt: skip
    head_s = forward - floor["body_s"]
    lines += [
        "",
        "Both references are a plain PyTorch loop over the same batch with AdamW and promptscale's loss (rank "
        "classification: each candidate's summed token log-probabilities at its answer positions, cross-entropy over "
        "the candidates; a test checks that all three give the same loss on the same weights). (a) computes the logits "
        f"for the whole vocabulary at every position (the LM head alone takes {head_s:.4f} s of the no-grad forward, "
        f"{head_s / forward:.0%}) and gathers the candidates' tokens, as a PEFT user would first write it; (b) asks "
        "transformers for the logits at the answer positions only (`logits_to_keep`), as promptscale does. "
        f"P-Tuning's {p} [P] positions are part of promptscale's "
        f"{args.seq_len} tokens; PEFT adds its {p} virtual tokens to the {args.seq_len - p} real ones, so both see "
        f"{args.seq_len} positions. Checkpoint bytes after training ends: after `on_fit_end` (prefixes folded, LoRA merged).",
        "",
    ]
    lines += targets_section(results)
    profiles = [r for r in results if r.profile]
    if profiles:
        lines += ["", "### Where the time goes", ""]
        for r in profiles:
            lines += profile_section(r)
    return lines


def targets_section(results: list[MethodResult]) -> list[str]:
    lines = ["### Targets", ""]
    rows = []
    for r in results:
        ok = r.ratio_b <= OVERHEAD_TARGET
        rows.append(
            [
                r.method,
                f"{'met' if ok else 'missed'} ({r.ratio_b:.2f}, noise ±{r.noise_b:.2f})",
                f"{'met' if r.data_share < DATA_SHARE_TARGET else 'missed'} ({r.data_share:.1%})",
                ("met" if r.ckpt["trainable_only"] else "missed") + f" ({r.ckpt['holds']})"
                if r.method in FROZEN_BACKBONE
                else f"– ({r.ckpt['holds']})",
            ]
        )
    lines += table(
        [
            "method",
            f"overhead: promptscale / (b) ≤ {OVERHEAD_TARGET}",
            "data path < 5% of a step",
            "checkpoint = trainable params only",
        ],
        rows,
    )
    lines += [
        "",
        f"Noise: half the spread of the per-round ratios, at least ±{MIN_NOISE:.2f}. The checkpoint target is for the "
        "frozen-backbone methods (fine-tuning saves every weight by design).",
    ]
    return lines


def profile_section(r: MethodResult, top: int = 8) -> list[str]:
    lines = []
    if "ours" in r.profile:
        ours, ref = r.profile["ours"], r.profile["ref"]
        total_ours, total_ref = sum(ms for ms, _ in ours.values()), sum(ms for ms, _ in ref.values())
        missed = r.ratio_b > OVERHEAD_TARGET
        why = "target missed" if missed else "for comparison; the target is met"
        lines += [
            f"**{r.method}** ({why}): one profiled step of each side, ops by self time (torch.profiler; the profiler "
            f"adds overhead): promptscale {total_ours:.0f} ms, reference (b) {total_ref:.0f} ms.",
            "",
        ]
        names = sorted(
            set(ours) | set(ref), key=lambda n: max(ours.get(n, (0, 0))[0], ref.get(n, (0, 0))[0]), reverse=True
        )
        rows = [
            [
                f"`{n}`",
                f"{ours.get(n, (0, 0))[0]:.1f}",
                str(ours.get(n, (0, 0))[1]),
                f"{ref.get(n, (0, 0))[0]:.1f}",
                str(ref.get(n, (0, 0))[1]),
            ]
            for n in names[:top]
        ]
        lines += table(["op", "promptscale ms", "calls", "reference (b) ms", "calls"], rows)
        diffs = sorted(((ours.get(n, (0, 0))[0] - ref.get(n, (0, 0))[0], n) for n in names), reverse=True)
        more = [f"`{n}` (+{d:.1f} ms)" for d, n in diffs[:3] if d > 0.05 * total_ours]
        less = [f"`{n}` ({d:.1f} ms)" for d, n in sorted(diffs)[:3] if -d > 0.05 * total_ref]
        lines += [""]
        lines.append(
            "promptscale spends more than the reference in "
            + (", ".join(more) if more else "no op by over 5% of its step")
            + "; less in "
            + (", ".join(less) if less else "no op by over 5% of the reference step")
            + "."
        )
        lines.append("")
    if "data" in r.profile:
        lines += [f"**{r.method}**: data path, one epoch of the train loader (cProfile, own time).", ""]
        lines += table(["function", "ms", "calls"], [[f"`{n}`", f"{ms:.1f}", str(c)] for n, ms, c in r.profile["data"]])
        lines.append("")
    return lines


def icl_section(model_name: str, icl: dict) -> list[str]:
    lines = [
        "## In-context learning: cached demonstration prefix",
        "",
        "`method=icl method.shots=4` on the RTE samples: the demonstration block encoded once and its key/value cache "
        "reused for every batch, vs the block's embeddings prepended to every query. Times include `prepare` "
        "(encoding the block).",
        "",
    ]
    lines += table(
        [
            "model",
            "eval examples",
            "demo tokens",
            "mean query tokens",
            "cached s",
            "full prompt s",
            "speedup",
            "identical predictions",
        ],
        [
            [
                model_name,
                str(icl["examples"]),
                str(icl["demo_tokens"]),
                f"{icl['query_tokens']:.1f}",
                f"{icl['cached_s']:.4f}",
                f"{icl['full_s']:.4f}",
                f"{icl['full_s'] / icl['cached_s']:.2f}",
                "yes" if icl["identical"] else "no",
            ]  # fmt: skip
        ],
    )
    return lines


def sweep_section(model_name: str, sweep: dict) -> list[str]:
    saved = sweep["separate_s"] - sweep["reused_s"]
    lines = [
        "## Prompt-length sweep: backbone reuse",
        "",
        f"Four `prompt_tuning` runs (prompt lengths {', '.join(map(str, sweep['lengths']))}; {sweep['steps']} training "
        "step(s) each on the benchmark batch) in one process: `load_backbone` for every run, vs one backbone and four "
        "PromptTuning modules built on it (the backbone is frozen, so runs can share it).",
        "",
    ]
    runs = len(sweep["lengths"])
    lines += table(
        [
            "model",
            "runs",
            "load per run s",
            "one backbone s",
            "saved s",
            "saved",
            "one load s",
            "loads avoided × one load s",
        ],
        [
            [
                model_name,
                str(runs),
                f"{sweep['separate_s']:.3f}",
                f"{sweep['reused_s']:.3f}",
                f"{saved:.3f}",
                f"{saved / sweep['separate_s']:.1%}",
                f"{sweep['load_s']:.3f}",
                f"{(runs - 1) * sweep['load_s']:.3f}",
            ]  # fmt: skip
        ],
    )
    lines += [
        "",
        "The measured saving also carries the run-to-run noise of the training steps; the last column is what the "
        "avoided loads alone account for. A real run trains for hundreds of steps, so reuse matters for short runs and "
        "large models.",
    ]
    return lines


STARTUP_TARGET_S = 5.0  # time to the first training step of a fresh process, cached model (issue 16)

STARTUP_PHASES = {
    "imports": "process start to the run: interpreter, imports, Hydra",
    "checks": "config, data read, fit checks",
    "setup": "run dir, claim, Lightning",
    "model": "tokenizer, cached weights, the method's module",
    "data": "tokenizing (fresh cache) and the Trainer's start, to the first batch",
    "first_step": "the first training step",
}


def cold_section(cold: dict) -> list[str]:
    startup = cold["startup_s"]
    total = startup["to_first_step"]
    verdict = "met" if total <= STARTUP_TARGET_S else "missed"
    lines = [
        "## Cold start",
        "",
        f"Fresh processes (WANDB_MODE=offline, the sample data), median of {cold['repeats']}: "
        f"`promptscale-train --help` {cold['help_s']:.2f} s; a one-step `prompt_tuning` run on RTE with "
        f"{cold['model']} (cached), then an evaluation of 8, {cold['run_s']:.2f} s in all. Where the time to its "
        f"first training step went (the run's `startup_s`):",
        "",
    ]
    lines += table(
        ["phase", "s", "what"],
        [[phase, f"{startup[phase]:.2f}", what] for phase, what in STARTUP_PHASES.items()]
        + [["**to first step**", f"**{total:.2f}**", f"target <= {STARTUP_TARGET_S:.0f} s: {verdict}"]],
    )
    return lines


def throughput_section(result: dict) -> list[str]:
    n = result["n"]
    lines = [
        "## Sweep throughput and memory",
        "",
        f"{n} identical one-step `prompt_tuning` jobs on RTE with {result['model']} (then an evaluation of 8), run "
        "by `python -m promptscale.sweep_memory`: in one process (`--multirun`: imports once, the backbone cached "
        "between jobs) and as separate `promptscale-train` processes. Runs per hour from the whole command's wall "
        "time (start-up included); peak RSS per job: in one process the job's own high-water mark (reset before "
        "it), separately the child process's.",
        "",
    ]
    rows = []
    for mode in ("in-process", "separate"):
        jobs = result[mode]["jobs"]
        peaks = [j["peak_mib"] for j in jobs]
        rows.append(
            [
                mode,
                f"{n / result[mode]['wall_s'] * 3600:.0f}",
                f"{statistics.median(j['wall_s'] for j in jobs):.1f}",
                f"{statistics.median(peaks):.0f}",
                f"{max(peaks):.0f}",
            ]
        )
    lines += table(["sweep", "runs/hour", "median s/job", "median peak RSS/job (MiB)", "max peak RSS (MiB)"], rows)
    jobs = result["in-process"]["jobs"]
    curve = ", ".join(f"{j['rss_after_mib']:.0f}" for j in jobs)
    growth = jobs[-1]["rss_after_mib"] / jobs[min(1, len(jobs) - 1)]["rss_after_mib"]
    lines += [
        "",
        f"RSS after each in-process job (MiB): {curve}; after the last / after job 2 = {growth:.2f}× "
        f"(flat: nothing keeps a finished job alive).",
    ]
    return lines


def lm_eval_section(result: dict | None, why_not: str | None = None) -> list[str]:
    lines = ["## Zero-shot evaluation: promptscale vs lm-evaluation-harness", ""]
    if result is None:
        return lines + [f"Not run: {why_not}."]
    rounds = result["rounds"]
    n = rounds[0]["examples"]
    ratios = [r["promptscale"]["cpu_s"] / r["lm_eval"]["cpu_s"] for r in rounds]
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= LM_EVAL_TARGET else "missed"
    lines += [
        f"RTE val ({n} examples), SmolLM2-135M fp32, zero-shot rank classification with lm-eval's own RTE prompt "
        f"(`method=icl method.shots=0 method.pattern=lm_eval`), batch 8, {result['threads']} torch thread(s), "
        "each side a fresh process of the `peer` venv (start-up included), alternating. CPU time = user + system "
        "of the process (`wait4`).",
        "",
    ]
    rows = [
        [
            str(i + 1),
            f"{r['lm_eval']['cpu_s']:.1f}",
            f"{r['promptscale']['cpu_s']:.1f}",
            f"{r['promptscale']['cpu_s'] / r['lm_eval']['cpu_s']:.2f}",
            f"{r['lm_eval']['wall_s']:.1f}",
            f"{r['promptscale']['wall_s']:.1f}",
        ]
        for i, r in enumerate(rounds)
    ]
    lines += table(
        [
            "round",
            "lm-eval CPU s",
            "promptscale CPU s",
            "promptscale / lm-eval",
            "lm-eval wall s",
            "promptscale wall s",
        ],
        rows,
    )
    spread = f" (rounds {min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
    theirs = result["lm_eval_accuracy"]
    ours = rounds[-1]["accuracy"]
    lines += [
        "",
        f"CPU time promptscale / lm-eval: median **{ratio:.2f}**{spread}; target ≤ {LM_EVAL_TARGET}: **{verdict}**. "
        f"Accuracy: lm-eval {theirs if theirs is None else f'{theirs:.4f}'}, promptscale {ours:.4f} "
        "(`make test-peer` checks the predictions example by example).",
    ]
    return lines


def render(sections: list[list[str]], header: list[str]) -> str:
    lines = list(header)
    for section in sections:
        lines += ["", *section]
    return "\n".join(lines) + "\n"


# ---- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m promptscale.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument(
        "--model", action="append", help="model config name (repeat for one table each); default smollm2-135m"
    )
    parser.add_argument("--methods", help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--pairs", type=int, help="alternating (promptscale, reference) timed pairs")
    parser.add_argument("--warmup", type=int, help="untimed steps of each side first (>= 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--dtype", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 autocast on a GPU, fp32 on CPU"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; --quick: 1)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiles")
    parser.add_argument(
        "--profile-method", default="prompt_tuning", help="also profile this method's step when it meets its target"
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: icl,sweep,throughput,lm_eval,cold")
    parser.add_argument(
        "--lm-eval-python",
        help="the Python of a venv with lm-eval and promptscale (the `peer` extra) for the comparison",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=os.environ.get("PROMPTSCALE_DATA_DIR"), help="FewGLUE data (RTE val)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny-gpt2, batch 2, 32 tokens, 1 pair, 4 methods"
    )
    args = parser.parse_args(argv)
    shown, skip_next = [], False
    for arg in sys.argv[1:] if argv is None else argv:  # the command line, for the report (not --out)
        if skip_next or arg.startswith("--out"):
            skip_next = arg == "--out"
            continue
        shown.append(arg)
    args.command = " ".join(["python -m promptscale.bench", *shown])
    quick = args.quick
    args.models = args.model or (["tiny-gpt2"] if quick else ["smollm2-135m"])
    args.methods = args.methods.split(",") if args.methods else (QUICK_METHODS if quick else list(METHODS))
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; trainable methods: {', '.join(METHODS)}")
    args.batch_size = args.batch_size or (2 if quick else 8)
    args.seq_len = args.seq_len or (32 if quick else 128)
    args.pairs = args.pairs or (1 if quick else 3)
    args.warmup = max(1, args.warmup or 1)
    args.icl_examples = 8 if quick else 16
    args.sweep_lengths = [2, 4, 6, 8] if quick else SWEEP_LENGTHS
    args.sweep_steps = 1
    args.cold_repeats = 1 if quick else 2
    args.throughput_jobs = 2 if quick else 20
    args.lm_eval_rounds = 1 if quick else 2
    args.lm_eval_limit = 8 if quick else None
    args.skip = set(filter(None, args.skip.split(",")))
    args.threads = args.threads or (1 if quick else auto_threads())
    if args.seq_len < 16:
        parser.error("--seq-len must be at least 16")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        return _run(args)


def _run(args) -> Path:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _bench(args)
    finally:
        torch.set_num_threads(threads)


def _bench(args) -> Path:
    from promptscale.data.samples import write_samples

    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    dtype = ("bf16" if device.type == "cuda" else "fp32") if args.dtype == "auto" else args.dtype
    load = load_average()
    started = time.perf_counter()
    sections: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="promptscale-bench-") as tmp_name:
        tmp = Path(tmp_name)
        samples = write_samples(tmp / "samples")
        data_root = write_long_rte(tmp / "long", samples, n_train=4 * args.batch_size, words=2 * args.seq_len)
        cache_dir = tmp / "tokenized"
        for model_name in args.models:
            log(f"{model_name}: forward floor")
            floor = bench_floor(args, model_name, data_root, cache_dir, device, dtype)
            results = []
            for method in args.methods:
                log(f"{model_name}: {method}")
                result = bench_method(args, model_name, method, data_root, cache_dir, device, dtype)
                log(
                    f"{model_name}: {method}: promptscale {result.ours_s:.4f} s, (a) {result.ref_s:.4f} s, "
                    f"(b) {result.ref_b_s:.4f} s, ratios {result.ratio:.2f} / {result.ratio_b:.2f}"
                )
                results.append(result)
            sections.append(
                model_section(
                    model_name,
                    results,
                    floor,
                    args,
                    torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                )
            )
        model_name = args.models[0]
        if "icl" not in args.skip:
            log(f"{model_name}: in-context learning")
            sections.append(icl_section(model_name, bench_icl(args, model_name, samples, cache_dir, device, dtype)))
        if "sweep" not in args.skip:
            log(f"{model_name}: prompt-length sweep")
            sections.append(
                sweep_section(model_name, bench_sweep(args, model_name, data_root, cache_dir, device, dtype))
            )
        if "throughput" not in args.skip:
            log(f"{model_name}: sweep throughput ({args.throughput_jobs} jobs, in one process and separately)")
            sections.append(throughput_section(bench_throughput(args, model_name, samples, tmp)))
        if "lm_eval" not in args.skip:
            if args.lm_eval_python and args.data_dir:
                log(f"zero-shot RTE: promptscale vs lm-eval ({args.lm_eval_rounds} round(s))")
                sections.append(lm_eval_section(bench_lm_eval(args, args.data_dir, tmp)))
            else:
                missing = "--lm-eval-python (the `peer` venv's Python; `make bench` builds it)"
                if not args.data_dir:
                    missing = "no FewGLUE data (--data-dir or PROMPTSCALE_DATA_DIR)"
                sections.append(lm_eval_section(None, missing))
        if "cold" not in args.skip:
            log("cold start")
            sections.append(cold_section(bench_cold_start(args, model_name, samples, tmp)))
    elapsed = time.perf_counter() - started
    header = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`{args.command}`); regenerate rather than edit. "
        f"{'Smoke run (--quick): the numbers mean nothing. ' if args.quick else ''}"
        f"Took {elapsed / 60:.1f} min.",
        "",
        f"- Hardware: {hardware_line(device, 'bf16 autocast' if dtype == 'bf16' else 'fp32')}",
        f"- 1-minute load average at start: {load:.2f} (torch threads: `--threads`, by default the cores idle at start)",
        f"- Each step: {args.warmup} untimed warm-up step(s) per side, then {args.pairs} alternating pair(s) "
        "(promptscale, reference); medians.",
        f"- Task: RTE in the sample data's words, premises long enough that every batch is exactly {args.seq_len} tokens.",
    ]
    args.out.write_text(render(sections, header))
    log(f"wrote {args.out} in {elapsed / 60:.1f} min")
    return args.out


if __name__ == "__main__":
    main()
