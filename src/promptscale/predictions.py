"""A run's per-example predictions and its trainable weights, beside it in the run dir, each
named by the config hash of the run (or evaluation) that wrote it, so that runs sharing a folder
(two sweeps in one sweep dir, a re-run with another config) never overwrite each other's.

``predictions-<hash>.jsonl.gz`` (gzip, always): one JSON object per evaluated example, in eval order::

    {"id": "<example id>", "gold": <label | [tags] | [accepted answers] | null>, "pred": <label | [tags]>,
     "scores": {"<label or candidate text>": <score>, ...}}

``scores`` are the candidates' scores the prediction is the argmax of (sum or mean token
log-probabilities, a linear head's logits, ICL's calibrated scores); omitted for tagging (the
tags are per word) and for chain-of-thought, which adds what it generated instead (``"rationale"``,
``"answer"``). MultiRC adds ``"group"`` (its question);
ReCoRD's candidates are the passage's entities and its gold is the list of accepted answers.
``gold`` is null for an unlabeled example (``promptscale predict``).

``weights-<hash>.safetensors``: the trainable weights once training has ended (folded prefixes, merged
LoRA's A/B, adapters, heads, prompts), with the run's resolved config and config hash in its
metadata, so ``promptscale eval`` rebuilds the module from this file alone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from promptscale.files import atomic_path

WEIGHTS_FORMAT = "promptscale-weights-1"
WEIGHTS_GLOB = "weights-*.safetensors"


def predictions_path(folder: Path, key: str) -> Path:
    return Path(folder) / f"predictions-{key}.jsonl.gz"


def weights_path(folder: Path, key: str) -> Path:
    return Path(folder) / f"weights-{key}.safetensors"


# ---- predictions -------------------------------------------------------------------------------
def prediction_records(task, examples, collected) -> list[dict]:
    """One record per example from a module's ``collected`` batches (example index, prediction,
    candidate scores, per-example extras such as generated text), in example order; an index seen
    twice (DDP's padded repeats) counts once."""
    rows, extra = {}, {}
    for idx, preds, scores, extras in collected:
        for b, i in enumerate(idx.tolist()):
            rows[i] = (preds[b], None if scores is None else scores[b])
            if extras is not None:
                extra[i] = extras[b]
    labels = list(task.labels)
    outside = labels.index("O") if "O" in labels else 0
    records = []
    for i in sorted(rows):
        ex, (pred, scores) = examples[i], rows[i]
        if task.kind == "tagging":  # words past data.max_length are predicted "O", as the metric counts them
            tags = pred.tolist()[: len(ex.tokens)]
            records.append({"id": ex.guid, "gold": ex.tags, "pred": [labels[t if t >= 0 else outside] for t in tags]})
            continue
        names = labels if task.kind == "classification" else list(ex.candidates)
        if task.kind == "classification":
            gold = None if ex.label is None else labels[ex.label]
        else:
            gold = ex.answers if ex.answers is not None else None if ex.label is None else names[ex.label]
        record = {"id": ex.guid, "gold": gold, "pred": names[int(pred)]}
        if scores is not None:
            record["scores"] = {name: float(score) for name, score in zip(names, scores.tolist())}
        if ex.group is not None:
            record["group"] = ex.group
        records.append({**record, **extra.get(i, {})})
    return records


def write_predictions(path: Path, records: list[dict]) -> dict:
    """Write ``records`` as gzipped JSON lines (no timestamp in the gzip header, so equal
    predictions give equal bytes), whole or not at all; return ``{"sha256", "n"}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    data = gzip.compress(text, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "n": len(records)}


def read_predictions(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stored_path(path: Path, results_file: Path) -> str:
    """``path`` relative to the results file's folder when inside it, else absolute."""
    path, root = Path(path).resolve(), Path(results_file).resolve().parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def resolve_stored(entry: str, results_file: Path) -> Path:
    """The file a results line's ``predictions.path`` / ``weights.path`` names."""
    return Path(entry) if Path(entry).is_absolute() else Path(results_file).resolve().parent / entry


# ---- weights -----------------------------------------------------------------------------------
def lm_trains(module) -> bool:
    """Every weight of the backbone trains (fine-tuning, PET, prompt + LM tuning)."""
    return all(p.requires_grad for p in module.backbone.parameters())


def trainable_state(module) -> dict:
    """The trainable weights by name (a tied weight once, as ``named_parameters`` gives it)."""
    return {name: p.detach().contiguous() for name, p in module.named_parameters() if p.requires_grad}


def save_weights(module, path: Path, config: dict, key: str) -> int:
    """Write the module's trainable weights (possibly none: tuning-free methods) with the run's
    config in the metadata; whole or not at all. Returns the file's size in bytes."""
    from safetensors.torch import save_file

    from promptscale import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": WEIGHTS_FORMAT, "config_hash": key, "config": json.dumps(config), "version": __version__}
    with atomic_path(path) as tmp:
        save_file(trainable_state(module), str(tmp), metadata=metadata)
    return path.stat().st_size


def read_weights_metadata(path: Path) -> tuple[dict, str]:
    """(resolved config, config hash) of a weights file, without loading a tensor."""
    from safetensors import safe_open

    from promptscale.errors import ConfigError

    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one line
        raise ConfigError(f"{path}: not a promptscale weights file ({type(err).__name__}: {err})") from None
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise ConfigError(f"{path}: not a promptscale weights file (no {WEIGHTS_FORMAT} metadata)")
    return json.loads(metadata["config"]), metadata["config_hash"]


def load_weights(module, path: Path) -> None:
    """Put a run's saved weights into a freshly built module of the same config, then bring it
    to its after-training state (``on_fit_end``: folds prefixes, merges LoRA) as the run
    evaluated it."""
    from safetensors.torch import load_file

    from promptscale.errors import ConfigError

    state = load_file(str(path))
    module.on_load_checkpoint({"state_dict": state})  # P-Tuning v2 / prefixes: fold before loading folded ones
    _, unexpected = module.load_state_dict(state, strict=False)
    expected = set(trainable_state(module))
    if unexpected or expected - set(state):
        raise ConfigError(
            f"{path}: weights do not fit the run's module (unexpected {unexpected[:3]}, "
            f"missing {sorted(expected - set(state))[:3]})"
        )
    module.on_fit_end()


# ---- what a finished run leaves beside it -------------------------------------------------------
def save_run_outputs(module, cfg, config: dict, examples, out_dir: Path, key: str, secrets=()) -> dict:
    """Write the run's predictions and (unless the whole LM trained and ``keep_lm_weights`` is
    off) its trainable weights into ``out_dir``; return the results line's ``predictions`` and
    ``weights`` entries (absolute paths: see :func:`paths_relative_to`)."""

    from promptscale.results import redact

    out_dir = Path(out_dir)
    predictions_file = predictions_path(out_dir, key)
    written = write_predictions(predictions_file, prediction_records(cfg.task, examples, module.collected))
    entries = {"predictions": {"path": str(predictions_file.resolve()), **written}, "weights": None}
    if cfg.get("keep_lm_weights") or not lm_trains(module):
        weights_file = weights_path(out_dir, key)
        # the run's recorded config (with what it read: data.fingerprint, file_digests)
        size = save_weights(module, weights_file, redact(config, list(secrets)), key)
        entries["weights"] = {"path": str(weights_file.resolve()), "bytes": size}
    return entries


def paths_relative_to(record: dict, results_file: Path) -> dict:
    """The record with its ``predictions`` / ``weights`` paths relative to the results file's
    folder where they lie inside it."""
    record = dict(record)
    for name in ("predictions", "weights"):
        if record.get(name):
            record[name] = {**record[name], "path": stored_path(record[name]["path"], results_file)}
    return record
