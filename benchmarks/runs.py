"""The other measurements: in-context learning with and without the cached demonstrations,
backbone reuse in a sweep, sweep throughput and memory, zero-shot evaluation against
lm-evaluation-harness, and the cold start of ``promptscale-train``."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.machine import autocast, release_memory, run_child, sync, timed, to_device, train_command
from benchmarks.steps import build_ours, fixed_length_data, our_step


# ---- in-context learning ---------------------------------------------------------------------
def bench_icl(args, model_name: str, samples: Path, cache_dir: Path, device, dtype) -> dict:
    from promptscale.config import validate
    from promptscale.data.datamodule import TaskDataModule
    from promptscale.methods.icl.model import ICL
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
    command = train_command()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

    def run(argv: list[str], program=command) -> float:
        start = time.perf_counter()
        done = subprocess.run(program + argv, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"bench: {' '.join(argv[:3])}... exited {done.returncode}: {done.stderr[-2000:]}")
        return elapsed

    help_s = statistics.median(run(["--help"]) for _ in range(args.cold_repeats))
    # the floor: importing what any training run needs, nothing of ours
    imports = ["-c", "import torch, lightning, transformers"]
    floor_s = statistics.median(run(imports, [sys.executable]) for _ in range(args.cold_repeats))
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
        "import_floor_s": floor_s,
        "run_s": statistics.median(walls),
        "startup_s": {phase: statistics.median(s[phase] for s in startups) for phase in startups[0]},
    }


# ---- sweep throughput ------------------------------------------------------------------------
def bench_throughput(args, model_name: str, samples: Path, tmp: Path) -> dict:
    """``benchmarks.sweep_memory``: the same N one-step jobs in one process (``--multirun``) and as
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
        argv = [sys.executable, "-m", "benchmarks.sweep_memory", "--jobs", str(args.throughput_jobs)]
        argv += ["--separate"] * (mode == "separate") + ["--json", str(out), "--sweep-dir", str(tmp / f"sweep-{mode}")]
        start = time.perf_counter()
        root = Path(__file__).resolve().parents[1]  # where `benchmarks` is a package
        done = subprocess.run([*argv, *overrides], env=env, capture_output=True, text=True, cwd=root)
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
    """Run ``argv`` to the end: its CPU seconds, wall seconds and stdout (``run_child``)."""
    ran = run_child(argv, logs, env)
    if ran["code"] != 0:
        raise RuntimeError(
            f"bench: {' '.join(argv[:4])}... exited {ran['code']}: {(logs / 'stderr.txt').read_text()[-2000:]}"
        )
    return {"cpu_s": ran["cpu_s"], "wall_s": ran["wall_s"], "stdout": (logs / "stdout.txt").read_text()}
