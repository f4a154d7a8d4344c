import sys

from omegaconf import OmegaConf

from promptscale.train import sweep_position


def test_sweep_position_counts_the_experiment_and_command_line_lists(monkeypatch):
    hydra_cfg = OmegaConf.create(
        {
            "sweeper": {"params": {"task": "cb,rte", "seed": "0,1"}},
            "job": {"num": 2},
            "overrides": {"task": ["task=rte", "seed=0", "method=lora"]},
        }
    )
    monkeypatch.setattr(
        sys, "argv", ["promptscale-train", "--multirun", "method=lora,finetune,pet", "experiment=x", "seed=0,1"]
    )
    # task 2 x seed 2 (the command line's seed list replaces the experiment's) x method 3
    assert sweep_position(hydra_cfg) == "sweep run 3 of 12: task=rte seed=0 method=lora"
