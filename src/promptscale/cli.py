"""``promptscale``: tools around runs (``promptscale-train`` runs them)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="promptscale")
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser(
        "table",
        help="results stores -> tables (Markdown, CSV, LaTeX), significance and plots",
        description="Rows methods; columns tasks (one table per model) or model sizes (one table per "
        "task); cells the score x100, mean ± std over seeds (n), failed runs marked. With predictions "
        "files: majority-class, zero-shot and seed-ensemble rows, and paired-bootstrap p-values against "
        "the baseline row. Prints the Markdown tables; with --out, also writes table.md, <table>.csv, "
        "<table>.tex, cells.csv and the plots the data allows (scale.png, prompt_length.png, init.png).",
    )
    table.add_argument("results", nargs="+", type=Path, help="results.jsonl files")
    table.add_argument("--out", type=Path, help="write the tables and plots here")
    table.add_argument("--columns", choices=("task", "model"), default="task",
                       help="task: one table per model (default); model: one table per task")  # fmt: skip
    table.add_argument("--baseline", default="finetune", metavar="NAME",
                       help="the row the p-values compare with: a method or a row label (default finetune)")  # fmt: skip
    table.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                       help="paired-bootstrap resamples per test (default 1000; 0: no p-values)")  # fmt: skip
    table.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    table.add_argument("--wandb-log", action="store_true",
                       help="log the tables to a new W&B run (offline unless WANDB_MODE says otherwise)")  # fmt: skip
    table.add_argument("--project", default="promptscale", help="W&B project for --wandb-log")
    table.add_argument("--group", help="W&B group for --wandb-log (default: the runs' experiment)")
    sub.add_parser("matrix", help="print the method x family x task-type support matrix")
    sensitivity = sub.add_parser("sensitivity", help="score mean/std/min/max across patterns (method.pattern)")
    sensitivity.add_argument("results", nargs="+", type=Path, help="results.jsonl files")
    run_help = "a finished run's dir (its weights-<hash>.safetensors), or that file"
    evaluate = sub.add_parser(
        "eval",
        help="evaluate a finished run on a split or a labeled file, without retraining",
        description="Rebuilds the run from its weights-<hash>.safetensors and evaluates it on the split that "
        "data.eval_split names (or --file, a jsonl/CoNLL file in the task's format); appends a results "
        "line (kind: eval, of: the run's config hash) and writes its predictions-<hash>.jsonl.gz.",
    )
    evaluate.add_argument("run", type=Path, help=run_help)
    evaluate.add_argument("overrides", nargs="*", help="data.* (e.g. data.eval_split=dev32, data.dir=...), "
                          "trainer.accelerator/devices/precision")  # fmt: skip
    evaluate.add_argument("--file", type=Path, help="evaluate on this file instead of a split")
    evaluate.add_argument("--results", type=Path, help="results store (default: <run dir>/eval/results.jsonl)")
    predict = sub.add_parser("predict", help="a finished run's predictions on new inputs (jsonl/CoNLL file)")
    predict.add_argument("run", type=Path, help=run_help)
    predict.add_argument("file", type=Path, help="inputs in the task's format (labels not needed in jsonl)")
    predict.add_argument("overrides", nargs="*", help="data.* and trainer.accelerator/devices/precision")
    predict.add_argument("--out", type=Path, help="predictions file (default: <run dir>/predict/predictions-<hash>.jsonl.gz)")  # fmt: skip
    export = sub.add_parser("export", help="a finished run's prompt, prefixes or LoRA as a PEFT adapter folder")
    export.add_argument("run", type=Path, help=run_help)
    export.add_argument("--peft", type=Path, required=True, metavar="DIR", help="write the PEFT adapter folder here")
    export.add_argument("--push-to-hub", metavar="REPO", help="then upload it to this Hugging Face hub repo")
    args = parser.parse_args(argv)

    if args.command in ("eval", "predict", "export"):
        import os
        import sys

        from promptscale import evaluate as ev
        from promptscale.errors import PromptscaleError

        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            if args.command == "eval":
                ev.evaluate(args.run, args.overrides, args.file, args.results)
            elif args.command == "predict":
                ev.predict(args.run, args.file, args.overrides, args.out)
            else:
                ev.export(args.run, args.peft, args.push_to_hub)
        except PromptscaleError as err:
            print(f"promptscale: error: {err}", file=sys.stderr)
            sys.exit(2)
        return

    if args.command == "table":
        missing = [str(p) for p in args.results if not p.is_file()]
        if missing:
            parser.error(f"not found: {', '.join(missing)}")
        if args.bootstrap < 0:
            parser.error(f"--bootstrap must be >= 0, got {args.bootstrap}")
        from promptscale.analysis.table import main_table
        from promptscale.errors import PromptscaleError

        try:
            main_table(args)
        except PromptscaleError as err:
            parser.exit(2, f"promptscale: error: {err}\n")
    elif args.command == "sensitivity":
        missing = [str(p) for p in args.results if not p.is_file()]
        if missing:
            parser.error(f"not found: {', '.join(missing)}")
        from promptscale.sensitivity import render_sensitivity

        print(render_sensitivity(args.results), end="")
    else:
        from promptscale.support import matrix_markdown

        print(matrix_markdown(), end="")


if __name__ == "__main__":
    main()
