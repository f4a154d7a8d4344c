"""lm-evaluation-harness on the same local files promptscale reads: a task YAML that includes
lm-eval's own super_glue task config as it ships and points it at a FewGLUE jsonl file (no hub
access needed). Used by the parity test (``make test-peer``) and the CPU-time comparison in
``make bench``; both run in the ``peer`` extra's venv, where lm-eval is installed."""

from __future__ import annotations

from pathlib import Path

# promptscale task -> FewGLUE folder, lm-eval's super_glue folder, lm-eval's gold index from a FewGLUE record
# (FewGLUE keeps SuperGLUE's string labels where the hub copy has class indices; WSC nests its spans)
TASKS = {
    "boolq": ("BoolQ", "boolq", "{{ label | int }}"),
    "cb": ("CB", "cb", "{{ ['entailment', 'contradiction', 'neutral'].index(label) }}"),
    "copa": ("COPA", "copa", None),
    "rte": ("RTE", "rte", "{{ ['entailment', 'not_entailment'].index(label) }}"),
    "wic": ("WiC", "wic", "{{ label | int }}"),
    "wsc": ("WSC", "wsc", "{{ label | int }}"),
}
FLATTEN = '''def flatten(dataset):
    """FewGLUE's WSC keeps the spans under "target"; the hub copy lm-eval reads has them at the top."""
    return dataset.map(lambda doc: doc["target"])
'''


def write_lm_eval_tasks(folder: Path, data_dir: Path, split: str = "val", tasks=tuple(TASKS)) -> list[str]:
    """Write ``promptscale_<task>.yaml`` (and WSC's flattening hook) into ``folder`` for lm-eval's
    ``--include_path``; return the task names to pass to lm-eval."""
    import lm_eval

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flatten.py").write_text(FLATTEN)
    for task in tasks:
        fewglue, lm_folder, target = TASKS[task]
        data = Path(data_dir) / "fewglue" / fewglue / f"{split}.jsonl"
        own = Path(lm_eval.__file__).parent / "tasks" / "super_glue" / lm_folder / "default.yaml"
        lines = [
            f"include: {own}",
            f"task: promptscale_{task}",
            "tag: []",
            "dataset_path: json",
            "dataset_name: null",
            f"dataset_kwargs: {{data_files: {{validation: '{data}'}}}}",
            "training_split: null",
            "validation_split: validation",
        ]
        if target:
            lines.append(f'doc_to_target: "{target}"')
        if task == "wsc":
            lines.append("process_docs: !function flatten.flatten")
        (folder / f"promptscale_{task}.yaml").write_text("\n".join(lines) + "\n")
    return [f"promptscale_{task}" for task in tasks]
