"""The Slurm executor's planning, without a Slurm: arrays per GPU count and their flags."""

from __future__ import annotations

from tokenwatt.sweep.plan import plan
from tokenwatt.sweep.slurm import SlurmOptions, arrays, describe_arrays, sbatch_parameters


def test_one_array_per_gpu_count_with_the_options():
    cases = plan({"model": "preset:tiny-llama", "device": "cuda",
                  "cases": [{"workload": {"new_tokens": [4, 5]}},
                            {"gpus": 2, "workload": {"new_tokens": [4, 5]}}]})  # fmt: skip
    groups = arrays(cases)
    assert sorted(groups) == [1, 2] and len(groups[1]) == 2 and len(groups[2]) == 2
    opts = SlurmOptions(partition="gpu", time_min=30, account="proj", sbatch=["--qos=high"],
                        parallelism=3)  # fmt: skip
    p = sbatch_parameters(opts, 2, len(groups[2]))
    assert p["gpus_per_node"] == 2 and p["slurm_partition"] == "gpu"
    assert p["timeout_min"] == 30 and p["slurm_array_parallelism"] == 2
    assert p["slurm_additional_parameters"] == {"qos": "high", "account": "proj"}
    lines = describe_arrays(cases, opts)
    assert len(lines) == 2 and "--gpus-per-node=2" in lines[1] and "--qos=high" in lines[1]
