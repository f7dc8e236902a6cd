from pathlib import Path

import pytest

from tokenwatt.config import case_id, load_config, validate
from tokenwatt.errors import ConfigError


def test_embedded_quickstart_is_valid():
    cfg = load_config(None)
    assert cfg.name == "quickstart"
    assert cfg.model == "preset:tiny-llama"
    assert cfg.measure.repeats == 5


def test_repo_quickstart_matches_embedded():
    repo = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
    assert load_config(repo) == load_config(None)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_shipped_configs_validate(path):
    """Run configs validate as they are; sweep configs validate case by case."""
    from tokenwatt.sweep.plan import load_sweep

    if path.name.startswith("sweep-"):
        _, cases = load_sweep(path)
        assert cases
    else:
        load_config(path)


def test_overrides_win_over_file():
    cfg = load_config(None, batch_size=4, precision="fp32", meter="estimate", out="/tmp/o")
    assert (cfg.workload.batch_size, cfg.precision, cfg.measure.meter, cfg.out) == (
        4, "fp32", "estimate", "/tmp/o",
    )  # fmt: skip


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"workload": {"batch_size": 0}}, "workload.batch_size"),
        ({"workload": {"new_tokens": -3}}, "workload.new_tokens"),
        ({"measure": {"repeats": 0}}, "measure.repeats"),
        ({"precision": "fp7"}, "choose one of auto, fp32"),
        ({"measure": {"meter": "wattmeter"}}, "choose one of auto"),
        ({"model": "preset:tiny-lama"}, "did you mean 'tiny-llama'"),
        ({"workload": {"batch_sise": 2}}, "did you mean 'batch_size'"),
        ({"repeats": 3}, "unknown key 'repeats'"),
        ({"device": "gpu"}, "use auto, cpu, cuda or cuda:N"),
        ({"workload": {"batch_size": "many"}}, "workload.batch_size"),
    ],
)
def test_bad_values_name_the_field(data, needle):
    with pytest.raises(ConfigError) as e:
        validate(data)
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg


def test_case_id_ignores_out_but_not_workload():
    a = load_config(None, out="/tmp/a")
    b = load_config(None, out="/tmp/b")
    c = load_config(None, batch_size=2)
    assert case_id(a) == case_id(b) != case_id(c)
