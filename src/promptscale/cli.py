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
    args = parser.parse_args(argv)

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
