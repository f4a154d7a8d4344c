"""One training step of every trainable method: promptscale's LightningModule against the two
references and the forward floor, on a batch of exactly the sequence length (the main table)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.machine import PeakMemory, autocast, log, optimizer_state_bytes, release_memory, sync, timed, to_device
from benchmarks.reference import build_reference, param_counts, reference_inputs, reference_step

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
        """promptscale / reference, per round (each round times one step of each side)."""
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
    for _ in range(args.pairs):  # rounds of (promptscale, (a), (b))
        for step, times in ((our, ours_t), (ref, ref_t), (ref_b, ref_b_t)):
            # each timed step follows an untimed step of its own side, as in training: on CPU the
            # step before leaves the allocator's pages in a state that moves the next step by up to
            # 10% (fine-tuning measured 0.97x (b) right after (a), 1.09x right after (b), 0.93x after
            # itself), which alternating single steps would charge to whichever side comes next
            step()
            times.append(timed(step, device))
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
        our()  # each profiled step after one of its own side, as the timed ones
        result.profile["ours"] = profile_ops(our, device)
        ref_b()
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
