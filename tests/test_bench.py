"""``make bench``: the smoke run writes a report of the right shape, every method's reference
steps, and the GPU-only parts (peak FLOP/s table, MFU column) render. Never a timing."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from benchmarks import bench, machine, reference, report, steps

MAIN_HEADER = [
    "method", "promptscale s/step", "(a) full logits s/step", "ratio to (a)", "(b) answer logits s/step",
    "ratio to (b)", "ratio to forward", "examples/s", "peak memory (MiB)", "trainable params", "optimizer-state bytes", "checkpoint bytes", "data share",
]  # fmt: skip


def tables(text: str) -> dict[tuple[str, ...], list[list[str]]]:
    """Every Markdown table of ``text``: header cells -> rows of cells."""
    found: dict[tuple[str, ...], list[list[str]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = tuple(c.strip() for c in line.strip("|").split("|"))
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            found[header] = rows
    return found


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    assert bench.main(["--quick", "--out", str(out)]) == out
    return out.read_text()


def test_quick_report_has_one_row_per_method_and_numbers_parse(quick_report):
    text = quick_report
    assert text.startswith("# Benchmarks\n")
    assert "## tiny-gpt2" in text
    found = tables(text)
    rows = found[tuple(MAIN_HEADER)]
    assert [r[0] for r in rows] == steps.QUICK_METHODS
    for row in rows:
        assert len(row) == len(MAIN_HEADER)
        values = [number(c) for c in row[1:]]
        assert all(v >= 0 for v in values)
        assert row[-1].endswith("%")
    assert all(number(r[10]) > 0 and number(r[12]) > 0 for r in rows)  # trainable params, checkpoint bytes

    other = next(rows for header, rows in found.items() if header[:2] == ("method", "reference"))
    assert [r[0] for r in other] == steps.QUICK_METHODS
    targets = next(
        rows for header, rows in found.items() if header[:2] == ("method", "overhead: promptscale / (b) ≤ 1.05")
    )
    assert [r[0] for r in targets] == steps.QUICK_METHODS
    for row in targets:
        assert re.match(r"(met|missed) \(\d+\.\d\d, noise ±\d\.\d\d\)$", row[1])
        assert re.match(r"(met|missed) \(\d+\.\d%\)$", row[2])
    frozen = {r[0]: r[3] for r in targets if r[0] != "finetune"}
    assert all(cell == "met (trainable only)" for cell in frozen.values())


def test_quick_report_icl_sweep_and_cold_start_tables(quick_report):
    found = tables(quick_report)
    (icl,) = next(rows for header, rows in found.items() if header[:2] == ("model", "eval examples"))
    assert icl[0] == "tiny-gpt2" and icl[-1] == "yes"
    assert all(number(c) > 0 for c in icl[1:-1])
    (sweep,) = next(rows for header, rows in found.items() if header[:2] == ("model", "runs"))
    assert sweep[1] == "4"
    [number(c) for c in sweep[2:]]
    cold = found[("phase", "s", "what")]
    assert [r[0] for r in cold] == [*report.STARTUP_PHASES, "**to first step**"]
    assert all(number(r[1]) >= 0 for r in cold[:-1])
    total = number(cold[-1][1].strip("*"))
    assert total == pytest.approx(sum(number(r[1]) for r in cold[:-1]), abs=0.05)
    assert re.search(r"target <= 5 s: (met|missed)", cold[-1][2])
    throughput = found[("sweep", "runs/hour", "median s/job", "median peak RSS/job (MiB)", "max peak RSS (MiB)")]
    assert [r[0] for r in throughput] == ["in-process", "separate"]
    assert all(number(c) > 0 for r in throughput for c in r[1:])
    # the lm-eval comparison needs the peer venv: the smoke run says it did not run and why
    assert "## Zero-shot evaluation: promptscale vs lm-evaluation-harness\n\nNot run: " in quick_report
    assert re.search(r"RSS after each in-process job \(MiB\): \d+, \d+; after the last / after job 2 = ", quick_report)


def test_quick_report_names_hardware_generically(quick_report):
    assert "- Hardware: CPU: " in quick_report
    assert "promptscale-bench-" not in quick_report and str(Path.home()) not in quick_report
    host = socket.gethostname()
    if len(host) > 3:
        assert host not in quick_report


SEQ_LEN = 64


def method_batch(tmp_path, sample_data, method: str, batch_size: int):
    """(config, batch of exactly SEQ_LEN tokens) of ``method`` on tiny-gpt2, as the bench builds them."""
    from promptscale.config import validate
    from promptscale.models import load_tokenizer
    from promptscale.train import compose

    root = steps.write_long_rte(tmp_path / "long", sample_data, n_train=4, words=2 * SEQ_LEN)
    cfg = compose(
        [
            "model=tiny-gpt2", f"method={method}", "logger=none", f"data.dir={root}", f"data.batch_size={batch_size}",
            f"data.max_length={SEQ_LEN + 1}", f"data.cache_dir={tmp_path / 'tok'}", *steps.method_overrides(method, SEQ_LEN),
        ]
    )  # fmt: skip
    validate(cfg)
    _, batch = steps.fixed_length_data(cfg, SimpleNamespace(tokenizer=load_tokenizer(cfg.model)), SEQ_LEN)
    return cfg, batch


@pytest.mark.parametrize("method", list(steps.METHODS))
def test_every_method_and_its_reference_take_a_step(tmp_path, sample_data, method):
    seq_len = SEQ_LEN
    cfg, batch = method_batch(tmp_path, sample_data, method, batch_size=2)
    cpu = torch.device("cpu")
    assert batch["input_ids"].shape[1] == seq_len
    module, optimizer, scheduler = steps.build_ours(cfg, cpu)
    steps.our_step(module, optimizer, scheduler, batch, cpu, "fp32")
    assert machine.optimizer_state_bytes(optimizer) > 0
    model, ref_opt, what = reference.build_reference(cfg, module.backbone.tokenizer, cpu)
    inputs = reference.reference_inputs(batch, method, steps.prompt_tokens(seq_len))
    assert inputs["input_ids"].shape[1] == seq_len - (steps.prompt_tokens(seq_len) if method == "ptuning" else 0)
    reference.reference_step(model, ref_opt, inputs, cpu, "fp32", answer_only=False)
    reference.reference_step(model, ref_opt, inputs, cpu, "fp32", answer_only=True)
    assert machine.optimizer_state_bytes(ref_opt) > 0 and what
    ours_trainable = module.parameter_counts()["trained_params"]
    if method in ("finetune", "prompt_tuning", "adapter", "lora"):  # the same weights train on both sides
        assert reference.param_counts(model)[0] == ours_trainable
    checkpoint = steps.checkpoint_info(module)
    assert checkpoint["bytes"] > 0
    assert checkpoint["trainable_only"] == (method != "finetune")


def test_peak_flops_table_matches_device_names():
    assert machine.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert machine.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert machine.peak_bf16_flops("NVIDIA H200") == 989e12
    assert machine.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert machine.peak_bf16_flops("NVIDIA L40S") == 362e12
    assert machine.peak_bf16_flops("NVIDIA L4") == 121e12
    assert machine.peak_bf16_flops("Tesla V100-SXM2-16GB") is None


def test_gpu_section_adds_mfu():
    args = bench.parse_args(["--quick"])
    result = steps.MethodResult(
        method="finetune", ours=[0.1], ref=[0.1], ref_b=[0.1], data_s=0.001, rows=2, ours_memory=2**20,
        ref_memory=2**20, trainable=10, total=10, ref_trainable=10, opt_bytes=80, ref_opt_bytes=80,
        ckpt={"bytes": 100, "holds": "all weights", "trainable_only": False}, final_ckpt={"bytes": 100}, reference="bare",
        optimizer="AdamW",
    )  # fmt: skip
    floor = {"forward_s": 0.03, "body_s": 0.02, "params": 1_000_000_000, "load_s": 1.0, "rows": 2}
    lines = report.model_section("some-model", [result], floor, args, gpu="NVIDIA H100 80GB HBM3")
    found = tables("\n".join(lines))
    (header, rows), *_ = found.items()
    assert header[-1] == "MFU"
    # 6 x 1e9 params x (2 x 32) tokens / (0.1 s x 989e12 FLOP/s)
    assert rows[0][-1] == f"{6 * 1e9 * 64 / (0.1 * 989e12):.1%}"
    cpu_lines = report.model_section("some-model", [result], floor, args)
    assert "MFU" not in "\n".join(cpu_lines)


@pytest.mark.parametrize("method", list(steps.METHODS))
def test_references_compute_promptscales_loss(tmp_path, sample_data, method):
    """Like for like: (a) and (b) give the same loss on the same batch; where both sides start from
    the same weights (fine-tuning; LoRA and adapters, whose added weights start at zero), it is
    promptscale's loss too. Prompt methods start from different prompts, so only (a) = (b) holds."""
    seq_len = SEQ_LEN
    cfg, batch = method_batch(tmp_path, sample_data, method, batch_size=4)
    cpu = torch.device("cpu")
    module, _, _ = steps.build_ours(cfg, cpu)
    model, _, _ = reference.build_reference(cfg, module.backbone.tokenizer, cpu)
    module.eval(), model.eval()  # no dropout: the same numbers on both sides
    inputs = reference.reference_inputs(batch, method, steps.prompt_tokens(seq_len))
    with torch.no_grad():
        full = reference.reference_loss(model, inputs, answer_only=False)
        answer = reference.reference_loss(model, inputs, answer_only=True)
        ours = module.loss(module(batch), batch)
    assert torch.isfinite(full) and full.item() == pytest.approx(answer.item(), abs=1e-5)
    if method in ("finetune", "lora", "adapter"):
        assert ours.item() == pytest.approx(full.item(), abs=1e-5)


def test_lm_eval_section_reports_the_cpu_time_ratio_and_verdict():
    def side(cpu):
        return {"cpu_s": cpu, "wall_s": cpu + 1, "stdout": ""}

    result = {
        "threads": 1,
        "lm_eval_accuracy": 0.5451,
        "rounds": [
            {"lm_eval": side(100.0), "promptscale": side(70.0), "accuracy": 0.5451, "examples": 277},
            {"lm_eval": side(100.0), "promptscale": side(90.0), "accuracy": 0.5451, "examples": 277},
        ],
    }
    text = "\n".join(report.lm_eval_section(result))
    rows = tables(text)[
        ("round", "lm-eval CPU s", "promptscale CPU s", "promptscale / lm-eval", "lm-eval wall s", "promptscale wall s")
    ]
    assert [r[3] for r in rows] == ["0.70", "0.90"]
    assert "median **0.80** (rounds 0.70–0.90); target ≤ 0.8: **met**" in text
    result["rounds"][1]["promptscale"] = side(95.0)
    assert "**missed**" in "\n".join(report.lm_eval_section(result))
