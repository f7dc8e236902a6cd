"""Shared fixtures. Tests never reach a model hub: presets and self-saved checkpoints only."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With TOKENWATT_NO_SKIPS=1 (every .ci/run block) a skipped test fails the run: a skip in
    CI means a service or package that should be there was not, and a block that skips what
    it exists to run must not pass."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("TOKENWATT_NO_SKIPS") == "1" and skipped and exitstatus == 0:
        reporter.write_line("")
        reporter.write_line(
            f"TOKENWATT_NO_SKIPS: {len(skipped)} test(s) skipped (-rs lists "
            "them with their reasons); CI runs every test it selects",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Small and fast: the tiny preset, short prompts, no minimum trial length.
FAST = [
    "--model", "preset:tiny-llama", "--prompt-tokens", "8", "--new-tokens", "6",
    "--repeats", "2", "--warmup", "0", "--min-seconds", "0", "--idle-seconds", "0.05",
]  # fmt: skip


@pytest.fixture
def fast_args() -> list[str]:
    return list(FAST)


@pytest.fixture
def invoke():
    """Run the CLI in-process; returns click's Result."""
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    def _invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return _invoke


@pytest.fixture
def sim_board(monkeypatch):
    """The run reads simulated GPU 0 through the real NvmlMeter (fault-injection tests)."""
    from tokenwatt.energy.meters.nvml import NvmlMeter
    from tokenwatt.sim import nvml as sim

    sim.configure(gpus=1, power=250.0, period_s=0.01)
    monkeypatch.setattr(
        "tokenwatt.energy.meters.select.open_meters",
        lambda *a, **k: [NvmlMeter(0, nvml=sim, measure_period=False)],
    )
    return sim
