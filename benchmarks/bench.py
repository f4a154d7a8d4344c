"""``make bench`` / ``python -m benchmarks.bench``: speed, memory and storage of every trainable
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
  three take turns in rounds after warm-up steps in one process, each side's timed step right
  after an untimed step of its own (as in training); each is the median of the rounds, a ratio the
  median of the per-round ratios;
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
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.machine import auto_threads, hardware_line, load_average, log
from benchmarks.report import (
    cold_section,
    icl_section,
    lm_eval_section,
    model_section,
    render,
    sweep_section,
    throughput_section,
)
from benchmarks.runs import bench_cold_start, bench_icl, bench_lm_eval, bench_sweep, bench_throughput
from benchmarks.steps import METHODS, QUICK_METHODS, SWEEP_LENGTHS, bench_floor, bench_method, write_long_rte

# ---- main ------------------------------------------------------------------------------------
LOCAL_PATH_OPTIONS = ("--out", "--lm-eval-python", "--data-dir")  # left out of the command in the report


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument(
        "--model", action="append", help="model config name (repeat for one table each); default smollm2-135m"
    )
    parser.add_argument("--methods", help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument(
        "--pairs",
        type=int,
        help="timed rounds of (promptscale, (a), (b)), each step after one of its own side (default 5: "
        "with 3, one method's ratio swung 0.95-1.11 between runs on 2 CPU cores)",
    )
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
    for arg in sys.argv[1:] if argv is None else argv:  # the command line, for the report (no local paths)
        if skip_next or arg.startswith(LOCAL_PATH_OPTIONS):
            skip_next = arg in LOCAL_PATH_OPTIONS
            continue
        shown.append(arg)
    args.command = " ".join(["python -m benchmarks.bench", *shown])
    quick = args.quick
    args.models = args.model or (["tiny-gpt2"] if quick else ["smollm2-135m"])
    args.methods = args.methods.split(",") if args.methods else (QUICK_METHODS if quick else list(METHODS))
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; trainable methods: {', '.join(METHODS)}")
    args.batch_size = args.batch_size or (2 if quick else 8)
    args.seq_len = args.seq_len or (32 if quick else 128)
    args.pairs = args.pairs or (1 if quick else 5)
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
        f"- Each step: {args.warmup} untimed warm-up step(s) per side, then {args.pairs} round(s) of "
        "(promptscale, (a), (b)), each side's timed step right after an untimed one of its own (the "
        "steady state of training); medians.",
        f"- Task: RTE in the sample data's words, premises long enough that every batch is exactly {args.seq_len} tokens.",
    ]
    if device.type != "cuda":
        header.append(
            "- GPU: none here, so the bf16/CUDA figures (MFU for fine-tuning, tokens/s per method) have not run; "
            "the same command on a GPU adds them to each model's table."
        )
    args.out.write_text(render(sections, header))
    log(f"wrote {args.out} in {elapsed / 60:.1f} min")
    return args.out


if __name__ == "__main__":
    main()
