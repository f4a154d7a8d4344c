"""Launcher and trainer presets (no cluster needed): what they ask a scheduler for, the threads a
job takes, the sweep position any launcher prints, and the sharded-training presets composed.
The real SLURM / Ray / DDP runs are in test_cluster.py and test_ddp.py (``make test-cluster``)."""

from __future__ import annotations

import os
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from promptscale import train as T


def launcher(name: str) -> dict:
    with initialize_config_dir(config_dir=T.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=False)


def test_slurm_defaults_fit_a_cpu_partition_and_the_gpu_profile_asks_for_gpus():
    cpu = launcher("slurm")
    # no GPU and no gres: a CPU partition rejects both ("Invalid generic resource (gres) specification")
    assert cpu["gpus_per_node"] is None and cpu["gres"] is None and cpu["gpus_per_task"] is None
    assert cpu["cpus_per_task"] == 1 and cpu["mem_gb"] is None  # memory: the partition's default
    assert cpu["additional_parameters"] == {"requeue": True}
    gpu = launcher("slurm_gpu")
    assert (gpu["gpus_per_node"], gpu["cpus_per_task"], gpu["mem_gb"]) == (1, 8, 64)
    assert gpu["_target_"].endswith("SlurmLauncher")


def shipped(name: str) -> dict:
    """A launcher file as shipped, over the files it extends (hydra-ray-launcher, in the `cluster`
    extra, may be missing here: then it cannot be composed)."""
    path = f"{T.CONF_DIR}/hydra/launcher/{name}.yaml"
    own = OmegaConf.load(path)
    parents = [shipped(p) for p in own.get("defaults", []) if p != "ray"]
    return OmegaConf.to_container(OmegaConf.merge(*parents, {k: v for k, v in own.items() if k != "defaults"}))


def test_ray_cluster_is_cpu_only_and_can_attach_to_a_running_head():
    ray = shipped("ray_cluster")["ray"]
    assert ray["remote"] == {"num_cpus": 1, "num_gpus": 0}
    # hydra-ray-launcher sets 75 MB unless the key is there; ray.init refuses it when given an address
    assert "object_store_memory" in ray["init"] and ray["init"]["object_store_memory"] is None
    assert shipped("ray_cluster_gpu")["ray"]["remote"] == {"num_cpus": 8, "num_gpus": 1}


@pytest.mark.parametrize(
    "affinity, env, expected",
    [
        ({0, 1, 2, 3}, {}, 4),
        ({0, 1, 2, 3}, {"SLURM_CPUS_PER_TASK": "2"}, 2),
        ({0, 1, 2, 3}, {"OMP_NUM_THREADS": "1"}, 1),
        ({0}, {"SLURM_CPUS_PER_TASK": "8"}, 1),  # taskset / cpuset: fewer cores than SLURM says
        ({0, 1}, {"SLURM_CPUS_PER_TASK": "", "OMP_NUM_THREADS": "x"}, 2),
    ],
)
def test_job_threads_are_the_cores_the_job_has(monkeypatch, affinity, env, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: affinity)
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert T.job_threads() == expected


def test_local_launcher_caps_concurrent_jobs(monkeypatch):
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

    from promptscale.launchers import CappedLocalLauncher

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    params = {k: v for k, v in launcher("local").items() if k != "_target_"}
    assert params["array_parallelism"] is None and params["cpus_per_task"] == 1
    waves = []

    def launch(self, job_overrides, initial_job_idx):
        waves.append((initial_job_idx, len(job_overrides), os.environ["OMP_NUM_THREADS"]))
        return list(range(initial_job_idx, initial_job_idx + len(job_overrides)))

    monkeypatch.setattr(LocalLauncher, "launch", launch)
    one_thread = CappedLocalLauncher(**params)
    assert one_thread.launch([[f"seed={i}"] for i in range(10)], 0) == list(range(10))
    assert waves == [(0, 4, "1"), (4, 4, "1"), (8, 2, "1")]  # 4 cores, 1 thread a job: 4 at a time
    waves.clear()
    CappedLocalLauncher(**{**params, "cpus_per_task": 2}).launch([["seed=0"]] * 5, 0)
    assert waves == [(0, 2, "2"), (2, 2, "2"), (4, 1, "2")]


def test_sweep_position_comes_from_the_sweeps_own_config_not_argv(tmp_path, monkeypatch):
    """Under submitit and Ray the job's argv is the launcher's: read what Hydra saved for the sweep."""
    OmegaConf.save(
        {"hydra": {"overrides": {"task": ["seed=0,1,2,3", "method=lora,finetune", "task=rte"]}}},
        tmp_path / "multirun.yaml",
    )
    hydra_cfg = OmegaConf.create(
        {"sweeper": {"params": None}, "sweep": {"dir": str(tmp_path)}, "job": {"num": 5},
         "overrides": {"task": ["seed=2", "method=finetune", "task=rte"]}}
    )  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["-m", "submitit.core._submit", str(tmp_path)])
    assert T.sweep_position(hydra_cfg) == "sweep run 6 of 8: seed=2 method=finetune task=rte"


@pytest.mark.gpu  # composed and instantiated here; a GPU run of trainer=fsdp / trainer=deepspeed is still to do
def test_fsdp_and_deepspeed_presets_compose():
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    cfg = T.compose(
        ["trainer=fsdp", "trainer.strategy.activation_checkpointing_policy=${trainer.strategy.auto_wrap_policy}"]
    )
    kwargs = T.trainer_kwargs(cfg)
    assert (kwargs["accelerator"], kwargs["precision"]) == ("gpu", "bf16-mixed")
    strategy = kwargs["strategy"]
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy._state_dict_type == "full" and strategy.sharding_strategy.name == "FULL_SHARD"
    assert strategy._activation_checkpointing_kwargs  # the option reaches the strategy
    assert T.trainer_kwargs(T.compose(["trainer=fsdp"]))["strategy"]._activation_checkpointing_kwargs == {}

    ds = T.compose(["trainer=deepspeed", "trainer.strategy.offload_optimizer=true"])
    strategy = OmegaConf.to_container(ds.trainer.strategy)
    assert strategy["_target_"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert (strategy["stage"], strategy["offload_optimizer"], ds.trainer.precision) == (3, True, "bf16-mixed")
