"""Every conf/experiment/*.yaml composes and validates for every cell of its sweep, with each
method's own settings; every experiment's smoke grid (debug=smoke, tiny model) runs end to end
and gives a table. Also: validate() is idempotent for every method, method_overrides, eval_seed,
trained vs kept parameters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from promptscale.config import validate
from promptscale.errors import ConfigError
from promptscale.methods import METHODS
from promptscale.sweep import check_cells, sweep_cells
from promptscale.train import CONF_DIR
from promptscale.train import compose as compose_train

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
# the tiny model of each family that stands in for an experiment's models in its smoke run
TINY = {"encoder": "tiny-bert", "encdec": "tiny-t5", "decoder": "tiny-llama"}


def cells_of(experiment: str, extra=()) -> list[list[str]]:
    cfg = compose("train", overrides=[f"experiment={experiment}", *extra], return_hydra_config=True)
    return sweep_cells(cfg.hydra.sweeper.params, [f"experiment={experiment}", *extra])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_cell_of_every_experiment_composes_and_validates(experiment):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cells = cells_of(experiment)
        assert len(cells) > 1
        failures = [(cells[i], f"{type(err).__name__}: {err}") for i, err in check_cells(cells)]
    assert not failures, failures[:3]


def test_check_cells_names_the_cell_that_fails():
    cells = [["method=prompt_tuning", f"method.init={init}"] for init in ("vocab", "vocabb", "random")]
    cells.append(["method=finetune", "method.prompt_length=5"])  # a key finetune does not have
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        failed = {i: str(err) for i, err in check_cells(cells)}
    assert set(failed) == {1, 3}
    assert "vocabb" in failed[1] and "prompt_length" in failed[3]


def _method(experiment: str, method: str, model: str | None = None) -> dict:
    cfg = compose_train([f"experiment={experiment}", f"method={method}", *([f"model={model}"] if model else [])])
    validate(cfg)
    return OmegaConf.to_container(cfg.method)


# the settings each experiment gives each method (the papers' where they give them)
@pytest.mark.parametrize(
    "experiment,method,model,expected",
    [
        ("ptv2", "finetune", "roberta-large", {"lr": 2e-5, "optimizer": "adamw"}),
        ("ptv2", "ptuning_v2", "roberta-large", {"lr": 3e-2, "prompt_length": 11}),
        ("ptv2", "prompt_tuning", "bert-large", {"lr": 3e-2, "prompt_length": 11, "optimizer": "adamw"}),
        ("method_scale", "finetune", "t5-base", {"lr": 1e-3, "optimizer": "adafactor", "scheduler": "constant"}),
        ("method_scale", "prompt_tuning", "t5-base", {"lr": 0.3, "prompt_length": 100, "init": "class_label"}),
        ("prompt_length", "prompt_tuning", "t5-base", {"lr": 0.3, "init": "class_label", "scheduler": "constant"}),
        ("prompt_init", "prompt_tuning", "t5-base", {"lr": 0.3, "prompt_length": 100, "optimizer": "adafactor"}),
        ("cpu_scale", "finetune", None, {"lr": 1e-5}),
        ("cpu_scale", "prompt_tuning", "gemma3-270m", {"lr": 0.3, "init": "class_label"}),
        ("cpu_scale", "ptuning_v2", None, {"head": "lm", "lr": 1e-2}),
        ("cpu_scale", "prefix_tuning", None, {"lr": 5e-3, "reparam_hidden": 512}),
        ("prompt_init_cpu", "prompt_tuning", None, {"lr": 0.3, "optimizer": "adafactor", "init": "random"}),
        ("prompt_init_cpu", "icl", None, {"shots": 0}),
    ],
)
def test_experiments_give_each_method_its_own_settings(experiment, method, model, expected):
    settings = _method(experiment, method, model)
    assert {k: settings[k] for k in expected} == expected


def test_prompt_init_cpu_shares_its_p20_class_label_cell_with_cpu_scale():
    # the README compares the two experiments' CB prompt-tuning cell: everything that runs is the same
    pick = ("model", "task", "method", "data", "trainer", "seed")
    init = compose_train(["experiment=prompt_init_cpu", "method.init=class_label", "method.prompt_length=20"])
    scale = compose_train(["experiment=cpu_scale", "method=prompt_tuning", "task=cb"])
    for cfg in (init, scale):
        validate(cfg)
    ran = OmegaConf.to_container(init)
    assert {k: ran[k] for k in pick} == {k: OmegaConf.to_container(scale)[k] for k in pick}


# ---- method_overrides: method-specific keys across a sweep of methods ---------------------------


def test_method_overrides_apply_to_the_method_in_use_only():
    over = [
        "++method_overrides.icl.shots=2",
        "++method_overrides.cot.max_new_tokens=9",
        "++method_overrides.finetune.lr=0.5",
    ]
    for method, key, value in (("icl", "shots", 2), ("cot", "max_new_tokens", 9), ("finetune", "lr", 0.5)):
        cfg = compose_train([f"method={method}", "model=tiny-gpt2", *over])
        validate(cfg)
        assert cfg.method[key] == value and cfg.method_overrides == {}


@pytest.mark.parametrize(
    "override,message",
    [
        ("++method_overrides.icl.shotz=2", "method_overrides.icl.shotz=2: icl has no setting 'shotz'"),
        ("++method_overrides.icl.shots=many", "method_overrides.icl.shots=many"),
        ("++method_overrides.iccl.shots=2", "method_overrides.iccl: no method 'iccl'"),
        ("++method_overrides.finetune.name=lora", "finetune has no setting 'name'"),
    ],
)
def test_method_overrides_are_checked_for_every_method(override, message):
    # the entry is checked although the run's method (prompt_tuning) is another
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(compose_train([override]))


# ---- validate() is idempotent ------------------------------------------------------------------

# one supported combination per method (and the pattern / template variants that rewrite the task)
VALIDATE_CASES = [
    *[[f"method={m}", "model=tiny-gpt2"] for m in METHODS if m != "ptuning_v2"],
    ["method=ptuning_v2", "model=tiny-bert"],
    ["method=ptuning", "model=tiny-gpt2", "method.pattern=1"],
    ["method=ptuning", "model=tiny-gpt2", "method.template='[P] {{ premise }} [P] {{ hypothesis }} [P]'"],
    ["method=pet", "model=tiny-bert", "method.pattern=2"],
    ["method=finetune", "model=tiny-gpt2", "++method_overrides.finetune.lr=0.1"],
]


@pytest.mark.parametrize("overrides", VALIDATE_CASES, ids=lambda o: " ".join(o))
def test_validate_twice_leaves_the_config_as_once(overrides):
    cfg = compose_train(overrides)
    validate(cfg)
    once = OmegaConf.to_container(cfg, resolve=True)
    validate(cfg)
    assert OmegaConf.to_container(cfg, resolve=True) == once


def test_ptuning_keeps_its_virtual_tokens_on_a_second_validate():
    cfg = compose_train(["method=ptuning", "method.prompt_length=3"])
    validate(cfg)
    validate(cfg)
    assert cfg.task.template.count("[P]") == 3


# ---- the eval subsample follows data.eval_seed, not seed ------------------------------------------


def test_eval_subsample_is_fixed_by_eval_seed(sample_data):
    from promptscale.data.datamodule import TaskDataModule

    def subsets(*overrides):
        cfg = compose_train(
            ["task=rte", f"data.dir={sample_data}", "data.train_size=8", "data.eval_size=8", *overrides]
        )
        data = TaskDataModule(cfg.task, cfg.data, cfg.seed)
        data.read()
        return [e.fields for e in data.train_examples], [e.fields for e in data.eval_examples]

    train0, eval0 = subsets("seed=0")
    train1, eval1 = subsets("seed=1")
    assert eval0 == eval1 and train0 != train1
    assert subsets("seed=0", "data.eval_seed=1")[1] != eval0


# ---- trainable parameters: trained (before a fold) and kept (after) --------------------------------


def test_prefix_tuning_records_trained_and_kept_parameters(train, tmp_path):
    record = train(["method=prefix_tuning", "method.prompt_length=4", "method.reparam_hidden=16"], tmp_path)
    cfg = compose_train(["method=prefix_tuning"])
    from promptscale.models import load_backbone

    backbone = load_backbone(cfg.model)
    layers, kv_heads, head_dim = backbone.kv_shape()
    width, d = layers * 2 * kv_heads * head_dim, backbone.hidden_size
    assert record["kept_params"] == 4 * width  # the folded prefixes
    assert record["trained_params"] == 4 * d + (d * 16 + 16) + (16 * width + width)  # embeddings + MLP
    assert "trainable_params" not in record


def test_methods_without_a_fold_keep_what_they_train(train, tmp_path):
    record = train(["method=prompt_tuning", "method.prompt_length=3"], tmp_path)
    assert record["trained_params"] == record["kept_params"] > 0


# ---- smoke: every experiment's whole grid, one step per cell, then the table ----------------------


def smoke_model(experiment: str) -> str:
    cfg = compose_train([f"experiment={experiment}"])
    return TINY[cfg.model.family]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_smoke_grid_runs_every_cell_and_tables_it(experiment, sample_data, tmp_path, monkeypatch, capsys):
    from promptscale import train as train_mod
    from promptscale.cli import main as cli_main

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        families = {
            compose("train", overrides=[f"experiment={experiment}", *cell]).model.family
            for cell in cells_of(experiment)[:1]
        }
    model = TINY[families.pop()]
    sweep = tmp_path / "sweep"
    args = [f"experiment={experiment}", "debug=smoke", f"model={model}", f"data.dir={sample_data}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        expected = len(cells_of(experiment, ["debug=smoke", f"model={model}"]))
    monkeypatch.setattr(sys, "argv", ["promptscale-train", "--multirun", *args, f"hydra.sweep.dir={sweep}"])
    train_mod.main()
    records = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()]
    assert len(records) == expected and all(r["status"] == "finished" for r in records)
    assert all(r["train_steps"] <= 1 for r in records)
    capsys.readouterr()
    cli_main(["table", str(sweep / "results.jsonl"), "--no-plots"])
    table = capsys.readouterr().out
    for method in {r["method"] for r in records}:
        assert method in table


def test_a_command_line_method_setting_an_experiment_replaces_is_refused(tmp_path):
    """``method.shots=0`` on a command line whose experiment sets ``method_overrides.icl.shots=4``
    would run 4-shot: refused in one line naming the way to set it, for a run and a sweep alike."""
    import subprocess

    from conftest import TRAIN_CLI

    base = [TRAIN_CLI, "experiment=cpu_scale", "model=tiny-llama", "task=cb", "method=icl", f"hydra.run.dir={tmp_path}"]
    for flag, extra in (
        ([], ["method.shots=0"]),
        (["--multirun"], ["method.shots=0,4", f"hydra.sweep.dir={tmp_path}/s"]),
    ):
        out = subprocess.run([base[0], *flag, *base[1:], *extra], capture_output=True, text=True, timeout=300)
        assert out.returncode != 0
        assert "method.shots=0 is replaced by method_overrides.icl.shots=4" in out.stderr
        assert "give it as method_overrides.icl.shots=0" in out.stderr
    cfg = compose_train(["experiment=cpu_scale", "method=icl", "method_overrides.icl.shots=0"])
    validate(cfg)
    assert cfg.method.shots == 0
