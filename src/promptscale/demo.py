"""``make demo``: prompt tuning vs fine-tuning on the packaged SmolLM2-135M, offline, a few steps,
then the results table. Uses $PROMPTSCALE_DATA_DIR (real FewGLUE) when set, else the sample
data that ships with the package."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from promptscale.analysis.table import render
from promptscale.data.samples import write_samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m promptscale.demo")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--task", default="rte")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-size", type=int, default=64, help="seeded subsample of a real eval split")
    args = parser.parse_args(argv)

    data_dir = os.environ.get("PROMPTSCALE_DATA_DIR")
    if data_dir:
        print(f"demo: real data from PROMPTSCALE_DATA_DIR={data_dir}")
        eval_size = [f"data.eval_size={args.eval_size}"]
    else:
        data_dir = str(write_samples(args.out / "data"))
        print(f"demo: the packaged sample data (set PROMPTSCALE_DATA_DIR for real FewGLUE) -> {data_dir}")
        eval_size = []
    sweep = args.out / "sweep"
    command = [
        sys.executable, "-m", "promptscale.train", "--multirun",
        "experiment=demo", f"task={args.task}", f"data.dir={data_dir}", *eval_size,
        f"trainer.max_steps={args.steps}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    print("demo:", " ".join(command[1:]), flush=True)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    subprocess.run(command, check=True, env=env)
    print(f"\n{args.steps} steps per method on {args.task}; score ×100 on the eval split\n")
    print(render([sweep / "results.jsonl"], args.out / "table"), end="")


if __name__ == "__main__":
    main()
