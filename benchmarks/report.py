"""BENCHMARKS.md: the sections, each saying what its figures are ratios of and how noisy they are."""

from __future__ import annotations

import statistics

from benchmarks.machine import peak_bf16_flops
from benchmarks.runs import LM_EVAL_TARGET
from benchmarks.steps import DATA_SHARE_TARGET, FROZEN_BACKBONE, MIN_NOISE, OVERHEAD_TARGET, MethodResult, prompt_tokens


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
        "ratios: medians over the rounds of promptscale / reference (each round runs promptscale, (a), (b), "
        "each side's timed step right after an untimed step of its own, as in training); ratio to (a) is "
        "what a user gains or loses against the PEFT loop they would write; ratio to (b) is "
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
    lines += [
        "",
        f'Floor: a fresh `python -c "import torch, lightning, transformers"` takes {cold["import_floor_s"]:.2f} s '
        "here (lightning alone imports torchmetrics' text and audio metrics, scipy.signal and torch._dynamo); "
        "`imports` and `checks` (where the data module and the tokenizer bring lightning and transformers in) "
        "together pay it, so a run cannot reach its first step faster than that plus the model and one step.",
    ]
    return lines


def throughput_section(result: dict) -> list[str]:
    n = result["n"]
    lines = [
        "## Sweep throughput and memory",
        "",
        f"{n} identical one-step `prompt_tuning` jobs on RTE with {result['model']} (then an evaluation of 8), run "
        "by `python -m benchmarks.sweep_memory`: in one process (`--multirun`: imports once, the backbone cached "
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
