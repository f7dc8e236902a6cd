"""What the Slurm cluster says, asked through its own commands before anything is submitted:
whether its commands are here and its controller answers (sinfo), what a partition offers (its
GRES) and which hosts its nodes are, whether it would accept a job script (`sbatch
--test-only`: partition, account, QOS, constraint, GRES, limits, submitting nothing), and
whether the results folder is one only this machine sees.

Every refusal is a one-line SlurmRefused (exit 2) naming the cause and the fix.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tokenwatt.errors import SlurmRefused

COMMANDS = ("sbatch", "srun", "sinfo", "squeue", "scancel")  # submitit needs srun on PATH
TIMEOUT_S = 60.0  # a client waits ~10 s per try for a controller that does not answer
# filesystems only this machine sees: a job on another node would write its results elsewhere
NODE_LOCAL = ("tmpfs", "ramfs", "overlay")
LOCAL_FIX = "or run the sweep here with --executor local"
# (words in Slurm's refusal, the fix), most specific first: "account/partition" is an account's
FIXES = (
    ("contact slurm controller", "no Slurm controller answers: start slurmctld or ask the "
     f"cluster's admins, {LOCAL_FIX}"),
    ("account", "give an account you may charge with --account (`sacctmgr show assoc "
     "user=$USER` lists them)"),
    ("qos", "give a QOS your account may use with --qos (`sacctmgr show assoc user=$USER "
     "format=qos`)"),
    ("partition", "give a partition `sinfo -s` lists with --partition"),
    ("feature", "give features the partition's nodes have with --constraint (`sinfo -o '%P %f'` "
     "lists them)"),
    ("generic resource", "the partition has no such GPUs: --gpus-per-case 0, or a partition "
     "with GPUs"),
    ("gres", "the partition has no such GPUs: --gpus-per-case 0, or a partition with GPUs"),
    ("time limit", "lower --time-limit to the partition's limit (`sinfo -o '%P %l'`)"),
    ("node configuration", "no node of the partition has that many CPUs, that much memory or "
     "those GPUs: lower --cpus-per-task or --mem, or pick another --partition"),
    ("memory", "lower --mem"),
)  # fmt: skip
OTHER_FIX = "check the flags `tokenwatt sweep --dry-run --executor slurm` prints"


@dataclass(frozen=True)
class Partition:
    """A partition as sinfo lists it: its name, its nodes' GRES and hostnames."""

    name: str
    gres: tuple[str, ...]
    hosts: tuple[str, ...]

    @property
    def gpus(self) -> int:
        """The most GPUs one of its nodes offers (a job asks per node)."""
        return max((gpu_count(g) for g in self.gres), default=0)

    @property
    def source(self) -> str:
        return f"partition {self.name} offers {','.join(self.gres) or 'no GRES'} (sinfo)"


def need_commands() -> None:
    """Slurm's commands are on PATH (submitit runs sbatch, srun and squeue)."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise SlurmRefused(f"{', '.join(missing)} not found on PATH: run the sweep where Slurm's "
                           "commands are (a login node; `module load slurm` on some clusters), "
                           f"{LOCAL_FIX}")  # fmt: skip


def run_slurm(cmd: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
    """A Slurm command; no answer within TIMEOUT_S is a refusal."""
    try:
        return subprocess.run(cmd, input=script, capture_output=True, text=True,
                              timeout=TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise SlurmRefused(f"{cmd[0]} did not answer in {TIMEOUT_S:.0f} s: is the Slurm "
                           f"controller overloaded or down? Try again later, "
                           f"{LOCAL_FIX}") from None  # fmt: skip
    except OSError as e:
        raise SlurmRefused(f"{cmd[0]} could not start ({e}); {LOCAL_FIX}") from None


def read_partition(name: str | None) -> Partition:
    """The partition a sweep's jobs go to (None: the cluster's default, sinfo's '*')."""
    p = run_slurm(["sinfo", "-h", "-N", "-o", "%P|%G|%n"])
    if p.returncode:
        raise SlurmRefused(f"sinfo failed: {last_line(p.stderr or p.stdout)}; "
                           f"{fix_for(p.stderr + p.stdout)}")  # fmt: skip
    rows = [line.split("|", 2) for line in p.stdout.splitlines() if line.count("|") == 2]
    known = sorted({r[0].rstrip("*") for r in rows})
    if name is None:
        default = [r for r in rows if r[0].endswith("*")]
        if not default:
            raise SlurmRefused(f"Slurm has no default partition; name one with --partition "
                               f"(sinfo lists: {', '.join(known) or 'none'})")  # fmt: skip
        name, mine = default[0][0].rstrip("*"), default
    else:
        wanted = name.split(",")  # sbatch takes a list: the job starts in the first that can
        if unknown := [w for w in wanted if w not in known]:
            raise SlurmRefused(f"partition {unknown[0]!r} is not one Slurm knows (sinfo "
                               f"lists: {', '.join(known) or 'none'}); give one with "
                               "--partition")  # fmt: skip
        mine = [r for r in rows if r[0].rstrip("*") in wanted]
    gres, hosts = ({r[i] for r in mine} for i in (1, 2))
    return Partition(name, tuple(sorted(gres)), tuple(sorted(hosts)))


def gpu_count(gres: str) -> int:
    """GPUs per node in a GRES string: gpu:2, gpu:a100:4(S:0-1), gpu:2,mps:100 -> 2, 4, 2."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def check_script(script: str, what: str) -> None:
    """Ask Slurm whether it would take `script` (sbatch --test-only submits nothing)."""
    p = run_slurm(["sbatch", "--test-only"], script)
    if p.returncode:
        text = p.stderr or p.stdout
        raise SlurmRefused(f"Slurm refuses {what}: {last_line(text)}; {fix_for(text)}; "
                           "nothing was submitted")  # fmt: skip


def check_shared(out: Path, part: Partition) -> None:
    """Refuse a results folder that only this machine sees when the partition's nodes include
    others (conservative: an unknown or network filesystem always passes)."""
    fs = fs_type(out)
    here = socket.gethostname().split(".")[0]
    others = sorted({h.split(".")[0] for h in part.hosts} - {here})
    if fs in NODE_LOCAL and others:
        raise SlurmRefused(f"out: {str(out)!r} is on {fs}, which only this machine sees, but the "
                           f"jobs run on {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}"
                           "; give --out a folder on a filesystem the nodes share (home, project "
                           f"or scratch), {LOCAL_FIX}")  # fmt: skip


def fs_type(path: Path) -> str:
    """The type of the filesystem `path` is (or would be) on; "" when unknown."""
    import psutil

    p = path.expanduser().resolve()
    best, kind = "", ""
    for part in psutil.disk_partitions(all=True):
        m = part.mountpoint
        if (p == Path(m) or Path(m) in p.parents) and len(m) > len(best):
            best, kind = m, part.fstype
    return kind


def last_line(text: str) -> str:
    """Slurm's last message, without the command's prefixes."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or ["no message"]
    line = lines[-1]
    for prefix in ("sbatch: error: ", "allocation failure: ", "Batch job submission failed: "):
        line = line.removeprefix(prefix)
    return line[:300]


def fix_for(text: str) -> str:
    low = text.lower()
    return next((fix for words, fix in FIXES if words in low), OTHER_FIX)
