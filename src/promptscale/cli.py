"""``promptscale``: tools around runs (``promptscale-train`` runs them)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="promptscale")
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="results stores -> method x task tables per model")
    table.add_argument("results", nargs="+", type=Path, help="results.jsonl files")
    table.add_argument("--out", type=Path, help="also write table.md and one CSV per model here")
    sub.add_parser("matrix", help="print the method x family x task-type support matrix")
    args = parser.parse_args(argv)

    if args.command == "table":
        from promptscale.table import render

        missing = [str(p) for p in args.results if not p.is_file()]
        if missing:
            parser.error(f"results file not found: {', '.join(missing)}")
        print(render(args.results, args.out), end="")
    else:
        from promptscale.support import matrix_markdown

        print(matrix_markdown(), end="")


if __name__ == "__main__":
    main()
