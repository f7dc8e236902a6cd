"""The Slurm executor without a Slurm: fake sinfo/sbatch/scancel on PATH (tests/fake_slurm.py)
print what the real ones print, and the real code path runs (the CLI, submitit's scripts).

How many GPUs a case asks for (device auto: one only where the partition's nodes have GPUs,
unless gpus_per_case says), the settings (flags over the sweep's slurm: block), and every
refusal before anything is written or submitted: one line, exit 2."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from tests.fake_slurm import FakeSlurm
from tests.test_bad_input import assert_one_line, cli_run, snapshot
from tokenwatt.placement import Offer
from tokenwatt.sweep.plan import plan
from tokenwatt.sweep.slurm import (
    SlurmOptions,
    arrays,
    batch_script,
    forwarded_sigterm,
    sbatch_parameters,
)

SWEEP = """name: s
model: preset:tiny-llama
device: DEVICE
fidelity: {enabled: false}
workload: {prompt_tokens: 8, new_tokens: [4, 5]}
measure: {meter: estimate, repeats: 1, min_seconds: 0, idle_seconds: 0}
out: OUT
"""


@pytest.fixture
def slurm(tmp_path, monkeypatch) -> FakeSlurm:
    fake = FakeSlurm(tmp_path / "fake")
    monkeypatch.setenv("PATH", fake.path())
    return fake


def sweep_file(tmp_path, device="auto", extra="", out=None) -> tuple[str, str]:
    out = str(out or tmp_path / "w" / "o")
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP.replace("DEVICE", device).replace("OUT", out) + extra)
    return str(cfg), out


def dry(cfg: str, *flags: str):
    return cli_run("sweep", cfg, "--dry-run", "--executor", "slurm", *flags)


def gpu_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("array of")]


# ---- the rule: device auto asks for a GPU only where the partition offers GPUs -------------


def test_auto_asks_for_a_gpu_on_a_partition_with_gpus(tmp_path, slurm):
    slurm.partitions("gpu*|gpu:a100:4(S:0-1)|n1", "gpu*|gpu:a100:4(S:0-1)|n2", "cpu|(null)|c1")
    cfg, _ = sweep_file(tmp_path, "[cpu, auto]")
    r = dry(cfg)
    assert r.exit_code == 0, r.output
    cpu, gpu = gpu_lines(r.stdout)
    assert cpu.startswith("array of 2 case(s), no GPU(s) each") and "gpus-per-node" not in cpu
    assert gpu.startswith("array of 2 case(s), 1 GPU(s) each") and "--gpus-per-node=1" in gpu
    assert "2 x device cpu" in r.stdout
    assert "2 x device auto -> 1 GPU: partition gpu offers gpu:a100:4(S:0-1) (sinfo)" in r.stdout
    tested = slurm.scripts("tested")  # each array's script went through sbatch --test-only
    assert len(tested) == 2 and "--gpus-per-node" not in tested[0]
    assert "#SBATCH --gpus-per-node=1" in tested[1]


def test_auto_asks_for_none_on_a_partition_without_gpus(tmp_path, slurm):
    slurm.partitions("gpu|gpu:4|n1", "cpu*|(null)|c1", "cpu*|(null)|c2")
    cfg, _ = sweep_file(tmp_path, "[cpu, auto]")
    r = dry(cfg)
    assert r.exit_code == 0, r.output
    (line,) = gpu_lines(r.stdout)
    assert line.startswith("array of 4 case(s), no GPU(s) each")
    assert "device auto -> 0 GPUs: partition cpu offers (null) (sinfo)" in r.stdout
    assert all("gpus-per-node" not in s for s in slurm.scripts("tested"))
    # the named GPU partition: auto asks for one there
    r = dry(cfg, "--partition", "gpu")
    assert [ln.split(":")[0] for ln in gpu_lines(r.stdout)] == [
        "array of 2 case(s), no GPU(s) each", "array of 2 case(s), 1 GPU(s) each"]  # fmt: skip
    assert "--partition=gpu" in gpu_lines(r.stdout)[1]


def test_gpus_per_case_overrides_the_partition(tmp_path, slurm):
    cfg, _ = sweep_file(tmp_path, "auto", "slurm: {gpus_per_case: 0}\n")
    r = dry(cfg)  # the file's 0 on a GPU partition: no GPU asked for
    assert gpu_lines(r.stdout)[0].startswith("array of 2 case(s), no GPU(s) each"), r.output
    assert "device auto -> 0 GPUs: gpus_per_case 0 set for the sweep" in r.stdout
    slurm.partitions("cpu*|(null)|c1")
    r = dry(cfg, "--gpus-per-case", "1")  # the flag over the file, on a partition without GPUs
    assert gpu_lines(r.stdout)[0].startswith("array of 2 case(s), 1 GPU(s) each"), r.output


def test_a_case_naming_its_boards_asks_for_them_whatever_the_partition():
    entries = [{"device": "cpu"}, {"device": "cpu", "gpus": 2}, {"device": "cuda"}, {"gpus": 3}]
    cases = plan({"model": "preset:tiny-llama", "cases": entries})
    none = Offer(0, "partition cpu offers (null) (sinfo)")
    assert {g: len(c) for g, c in arrays(cases, none).items()} == {0: 1, 1: 1, 2: 1, 3: 1}


# ---- settings: flags, the slurm: block, and how they reach sbatch ----------------------------


def test_settings_reach_the_script_and_a_flag_overrides_the_file(tmp_path, slurm):
    block = ("slurm: {partition: gpu, qos: low, account: proj, constraint: h100, mem: 16G, "
             "time_limit: 30, cpus_per_task: 4, array_parallelism: 1, "
             "sbatch: ['--mail-type=END']}\n")  # fmt: skip
    cfg, _ = sweep_file(tmp_path, "auto", block)
    r = dry(cfg, "--qos", "high")
    assert r.exit_code == 0, r.output
    (script,) = slurm.scripts("tested")
    for line in ("--partition=gpu", "--qos=high", "--account=proj", "--constraint=h100",
                 "--mem=16G", "--time=30", "--cpus-per-task=4", "--array=0-1%1",
                 "--mail-type=END", "--gpus-per-node=1"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, line
    assert "--qos=low" not in script
    assert "--qos=high" in gpu_lines(r.stdout)[0]  # the dry run prints the script's flags


def test_parameters_map_to_submitit():
    opts = SlurmOptions(partition="gpu", time_limit=30, account="proj", qos="high", mem="4G",
                        constraint="a100", array_parallelism=3, sbatch=["--exclusive"])  # fmt: skip
    p = sbatch_parameters(opts, 2, 2)
    assert p["gpus_per_node"] == 2 and p["slurm_partition"] == "gpu" and p["timeout_min"] == 30
    assert p["slurm_array_parallelism"] == 2 and p["slurm_qos"] == "high"
    assert p["slurm_account"] == "proj" and p["slurm_mem"] == "4G"
    assert p["slurm_constraint"] == "a100"
    assert p["slurm_additional_parameters"] == {"exclusive": True}
    assert "gpus_per_node" not in sbatch_parameters(opts, 0, 2)


@pytest.mark.parametrize(
    ("block", "flags", "needles"),
    [("slurm: {partiton: gpu}\n", (), ("slurm.partiton", "did you mean 'partition'")),
     ("slurm: {mem: 16 GB}\n", (), ("slurm.mem", "16G")),
     ("slurm: {time_limit: 0}\n", (), ("slurm.time_limit", "greater than or equal to 1")),
     ("slurm: {gpus_per_case: 2}\n", (), ("slurm.gpus_per_case", "write gpus: 2")),
     ("slurm: {sbatch: ['-q high']}\n", (), ("slurm.sbatch", "--qos=high")),
     ("slurm: {sbatch: ['--gres=gpu:1']}\n", (), ("tokenwatt sets --gres itself",)),
     ("slurm: [gpu]\n", (), ("slurm must be a mapping",)),
     ("", ("--gpus-per-case", "2"), ("--gpus-per-case: 2 GPUs", "write gpus: 2")),
     ("", ("--partition", "a b"), ("--partition", "without spaces"))],
)  # fmt: skip
def test_a_bad_setting_is_one_line_for_either_executor(tmp_path, block, flags, needles):
    cfg, out = sweep_file(tmp_path, "cpu", block)
    before = snapshot(tmp_path)
    for executor in ("local", "slurm"):
        r = cli_run("sweep", cfg, "--executor", executor, "-q", *flags)
        assert_one_line(r, *needles)
    assert snapshot(tmp_path) == before


# ---- refusals before anything is written or submitted ----------------------------------------


def refused(tmp_path, slurm, *flags: str, out=None, needles=()) -> str:
    """A real sweep (no dry run) refused: one line, exit 2, nothing written or submitted."""
    cfg, out = sweep_file(tmp_path, "auto", out=out)
    r = cli_run("sweep", cfg, "--executor", "slurm", "-q", *flags)
    err = assert_one_line(r, *needles)
    assert not (tmp_path / "w").exists() and slurm.scripts("submitted") == []
    return err


def test_refused_when_sbatch_is_not_on_path(tmp_path, slurm, monkeypatch):
    slurm.without("sbatch")
    monkeypatch.setenv("PATH", slurm.path(only=True))
    refused(tmp_path, slurm, needles=("sbatch not found on PATH", "--executor local"))


def test_refused_when_no_controller_answers(tmp_path, slurm):
    slurm.sinfo_fails("slurm_load_partitions: Unable to contact slurm controller (connect failure)")
    err = refused(tmp_path, slurm, needles=("Unable to contact slurm controller",))
    assert "start slurmctld" in err and "--executor local" in err


def test_refused_for_a_partition_slurm_does_not_know(tmp_path, slurm):
    refused(tmp_path, slurm, "--partition", "nope",
            needles=("partition 'nope' is not one Slurm knows", "sinfo lists: gpu"))  # fmt: skip


@pytest.mark.parametrize(
    ("text", "fix"),
    [("sbatch: error: Batch job submission failed: Invalid account or account/partition "
      "combination specified", "--account"),
     ("allocation failure: Invalid qos specification", "--qos"),
     ("allocation failure: Requested node configuration is not available", "--cpus-per-task"),
     ("allocation failure: Invalid generic resource (gres) specification", "--gpus-per-case 0")],
)  # fmt: skip
def test_refused_for_what_sbatch_test_only_rejects(tmp_path, slurm, text, fix):
    slurm.test_only_fails(text)
    err = refused(tmp_path, slurm, "--account", "nobody", needles=(fix, "nothing was submitted"))
    assert "Slurm refuses the array of 2 case(s) with 1 GPU(s) each" in err


def test_a_folder_only_this_machine_sees_is_refused_when_jobs_run_elsewhere(tmp_path, slurm):
    import socket
    import uuid
    from pathlib import Path

    from tokenwatt.sweep.slurm_cluster import fs_type

    shm = Path("/dev/shm")
    if fs_type(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    out = shm / f"tokenwatt-test-{uuid.uuid4().hex}" / "o"
    slurm.partitions("gpu*|gpu:4|node01", "gpu*|gpu:4|node02")
    refused(tmp_path, slurm, out=out, needles=("is on tmpfs", "node01, node02", "--out"))
    assert not out.parent.exists()
    # never refused: the jobs run on this machine, or the folder is not node-local
    slurm.partitions(f"gpu*|gpu:4|{socket.gethostname()}")
    assert dry(sweep_file(tmp_path, "auto", out=out)[0]).exit_code == 0
    slurm.partitions("gpu*|gpu:4|node01")
    assert dry(sweep_file(tmp_path, "auto")[0]).exit_code == 0


def test_a_submission_that_fails_anyway_cancels_what_was_submitted(tmp_path, slurm):
    """sbatch fails for the second array after the first was submitted: one line, exit 2, the
    first array cancelled; submitit printed nothing (its traceback, sbatch's stderr)."""
    slurm.submission_fails("sbatch: error: Batch job submission failed: Unable to contact "
                           "slurm controller (connect failure)", after=1)  # fmt: skip
    cfg, out = sweep_file(tmp_path, "[cpu, auto]")
    r = cli_run("sweep", cfg, "--executor", "slurm", "-q")
    assert_one_line(
        r,
        "sbatch failed: Unable to contact slurm controller",
        "start slurmctld",
        "job array(s) 101 submitted before were cancelled",
    )
    assert slurm.cancelled == ["101"]
    # what submitit submitted is the script the preflight tested, built by submitit itself
    (submitted,) = slurm.scripts("submitted")
    from pathlib import Path

    opts = SlurmOptions()
    assert submitted == batch_script(opts, Path(out), 0, 2) == slurm.scripts("tested")[0]
    assert not list((Path(out) / ".cases").glob("*.json"))  # no CASE.json left behind


def test_a_job_cancelled_before_its_case_starts_never_starts_it():
    """scancel SIGTERMs the job's own process, which submitit makes ignore SIGTERM: one that
    comes before the case process exists is remembered, and the case never starts."""
    with forwarded_sigterm() as term:
        os.kill(os.getpid(), signal.SIGTERM)
        assert term.run([sys.executable, "-c", "print('started')"]) == 143
        assert term.child is None
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler before it


def test_a_job_cancelled_while_its_case_runs_stops_the_case():
    with forwarded_sigterm() as term:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        t0 = time.monotonic()
        rc = term.run([sys.executable, "-c", "import time; time.sleep(60)"])
    assert rc == -signal.SIGTERM and time.monotonic() - t0 < 30
