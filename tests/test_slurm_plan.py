"""The Slurm executor's planning, without a Slurm: arrays per GPU count and their flags."""

from __future__ import annotations

from tokenwatt.placement import Offer
from tokenwatt.sweep.plan import plan
from tokenwatt.sweep.slurm import SlurmOptions, arrays, describe_arrays, sbatch_parameters

GPUS = Offer(2, "partition gpu offers gpu:2 (sinfo)")


def test_one_array_per_gpu_count_with_the_options():
    cases = plan({"model": "preset:tiny-llama", "device": "cuda",
                  "cases": [{"workload": {"new_tokens": [4, 5]}},
                            {"gpus": 2, "workload": {"new_tokens": [4, 5]}}]})  # fmt: skip
    groups = arrays(cases, GPUS)
    assert sorted(groups) == [1, 2] and len(groups[1]) == 2 and len(groups[2]) == 2
    opts = SlurmOptions(partition="gpu", time_min=30, account="proj", sbatch=["--qos=high"],
                        parallelism=3)  # fmt: skip
    p = sbatch_parameters(opts, 2, len(groups[2]))
    assert p["gpus_per_node"] == 2 and p["slurm_partition"] == "gpu"
    assert p["timeout_min"] == 30 and p["slurm_array_parallelism"] == 2
    assert p["slurm_additional_parameters"] == {"qos": "high", "account": "proj"}
    lines = describe_arrays(cases, opts, GPUS)
    arrays_ = [line for line in lines if line.startswith("array")]
    assert len(arrays_) == 2 and "--gpus-per-node=2" in arrays_[1] and "--qos=high" in arrays_[1]
