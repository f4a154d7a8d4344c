"""notebooks/analysis: the paired script and notebook agree, and the notebook runs (nbmake) on a
results store written here, drawing every plot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat

from promptscale.results import config_hash

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_script_and_notebook_are_paired_and_in_sync():
    script = jupytext.read(NOTEBOOKS / "analysis.py")
    notebook = jupytext.read(NOTEBOOKS / "analysis.ipynb")
    assert "py:percent" in notebook.metadata["jupytext"]["formats"]
    assert [(c.cell_type, c.source) for c in script.cells] == [(c.cell_type, c.source) for c in notebook.cells], (
        "notebooks/analysis.py and analysis.ipynb differ: run `jupytext --sync notebooks/analysis.py`"
    )


def _store(path: Path) -> Path:
    lines = []
    for model, params, width in (("small", 60_000_000, 512), ("large", 700_000_000, 1024)):
        for task in ("cb", "rte"):
            for seed in (0, 1):
                for method, settings, bonus in (
                    ("finetune", {}, 0.2),
                    ("prompt_tuning", {"prompt_length": 5, "init": "class_label"}, 0.05),
                    ("prompt_tuning", {"prompt_length": 20, "init": "class_label"}, 0.1),
                    ("prompt_tuning", {"prompt_length": 20, "init": "random"}, 0.0),
                ):
                    config = {"experiment": "nb", "seed": seed, "task": {"name": task},
                              "model": {"name": model, "params": params}, "method": {"name": method, **settings}}  # fmt: skip
                    score = 0.5 + bonus + params / 1e10 + seed / 100
                    lines.append({
                        "status": "finished", "config_hash": config_hash(config), "config": config,
                        "task": task, "method": method, "model": model, "model_params": params, "seed": seed,
                        "score": score, "metrics": {"accuracy": score},
                        "trainable_params": params if method == "finetune" else settings["prompt_length"] * width,
                    })  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _kernel_env(tmp_path: Path) -> dict:
    """The environment for nbmake; if no ``python3`` kernel spec is found, install one for this
    interpreter under a temporary JUPYTER_PATH."""
    from jupyter_client.kernelspec import KernelSpecManager

    env = dict(os.environ)
    if "python3" not in KernelSpecManager().find_kernel_specs():
        prefix = tmp_path / "jupyter"
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
                       check=True, capture_output=True)  # fmt: skip
        env["JUPYTER_PATH"] = os.pathsep.join(
            filter(None, [str(prefix / "share" / "jupyter"), env.get("JUPYTER_PATH")])
        )
    return env


def test_notebook_runs_on_a_results_store(tmp_path):
    store = _store(tmp_path / "results.jsonl")
    notebook = tmp_path / "run" / "analysis.ipynb"
    notebook.parent.mkdir()
    shutil.copy(NOTEBOOKS / "analysis.ipynb", notebook)  # executed in place there (--overwrite)
    env = _kernel_env(tmp_path) | {"PROMPTSCALE_RESULTS": str(store), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "--overwrite", str(notebook), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(notebook.parent)],
        cwd=notebook.parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    executed = nbformat.read(notebook, as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs[0].text.startswith(f"32 finished runs from {store}")
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # scale, prompt length, init
    tables = "".join(o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    assert "### small (60M parameters)" in tables and "### avg (cb, rte)" in tables
