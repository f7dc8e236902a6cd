"""Generated configs thrown at the loader: accepted, or rejected with the one-line ConfigError.

Never another exception, never a message spanning lines."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenwatt.config import RunConfig, load_config, read_yaml, validate
from tokenwatt.errors import ConfigError

FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FILES = settings(FUZZ, max_examples=40)  # each example writes a file
WORDS = ["bf16", "fp32", "int3", "preset:tiny-llama", "preset:nope", "cpu", "cuda:1"]
WORDS += ["estimate", "nvml", "auto", "", "DEU", "1e3", "0"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(WORDS)
)
anything = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)


def plausible(name: str, info) -> st.SearchStrategy:
    """Values of the field's own type near its range, so many configs are accepted."""
    ann = info.annotation
    if ann is bool:
        return st.booleans()
    if ann is int:
        return st.integers(min_value=0, max_value=64)
    if ann in (float, float | None):
        return st.floats(min_value=0, max_value=8)
    if name == "meter":
        return st.sampled_from(["auto", "estimate", "nvml", "rapl", "wattmeter"])
    return st.just(info.default) | st.sampled_from(WORDS)


def section(model: type) -> st.SearchStrategy:
    """Dicts of a section's own keys with plausible values, or typos and wild values."""
    keys = list(model.model_fields)
    good = st.fixed_dictionaries(
        {}, optional={k: plausible(k, f) for k, f in model.model_fields.items()}
    )
    typo = st.sampled_from(keys) | st.sampled_from([k[:-1] for k in keys]) | st.text(max_size=6)
    wild = st.dictionaries(typo, anything, max_size=3)
    return good | wild


SECTIONS = {
    name: section(f.annotation)
    for name, f in RunConfig.model_fields.items()
    if isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields")
}
TOP = [k for k in RunConfig.model_fields if k not in SECTIONS]
top_good = st.fixed_dictionaries(
    {}, optional={k: plausible(k, f) for k, f in RunConfig.model_fields.items() if k in TOP}
)
top_wild = st.dictionaries(st.sampled_from(TOP) | st.text(max_size=8), anything, max_size=4)

configs = st.tuples(top_good | top_wild, st.fixed_dictionaries({}, optional=SECTIONS)).map(
    lambda parts: {**parts[0], **parts[1]}
)


def accepted_or_one_line(fn, *args, **kwargs) -> bool:
    try:
        cfg = fn(*args, **kwargs)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "\r" not in msg, msg
        assert "Traceback" not in msg
        return False
    assert isinstance(cfg, (RunConfig, dict))
    return True


def test_generated_dicts():
    seen: list[bool] = []

    @FUZZ
    @given(configs)
    def check(data):
        seen.append(accepted_or_one_line(validate, data, "fuzz.yaml"))

    check()
    # Both outcomes are exercised: the property would be vacuous if everything were rejected.
    assert seen.count(True) >= 5 and seen.count(False) >= 5, (seen.count(True), len(seen))


@FILES
@given(st.text(alphabet=string.printable + "éü€\u2028", max_size=200))
def test_generated_yaml_text(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("y") / "c.yaml"
    p.write_text(text, encoding="utf-8")
    accepted_or_one_line(read_yaml, p)
    accepted_or_one_line(load_config, p)


@FILES
@given(st.binary(max_size=64))
def test_generated_bytes(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("b") / "c.yaml"
    p.write_bytes(raw)
    accepted_or_one_line(load_config, p)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "batch_size": st.integers(-5, 70000),
            "prompt_tokens": st.integers(-5, 10),
            "new_tokens": st.integers(-5, 10),
            "repeats": st.integers(-2, 3),
            "min_seconds": st.floats(allow_nan=True),
            "pue": st.floats(allow_nan=True),
            "precision": st.text(max_size=8),
            "meter": st.text(max_size=8),
            "device": st.text(max_size=8),
            "model": st.text(max_size=12).map(lambda s: "preset:" + s),
        },
    )
)
def test_generated_command_line_overrides(overrides):
    accepted_or_one_line(load_config, None, **overrides)


def test_known_crashers_are_one_line(tmp_path):
    """What the fuzzing found: an impossible date, deep nesting, bytes that are not UTF-8.

    None of them is a valid config: each must be refused, in one line saying why."""
    p = tmp_path / "c.yaml"
    for content, needle in (
        ("name: 2001-02-30\n", "out of range"),
        ("[" * 1200, "malformed YAML"),
        ("workload: {batch_size: .nan}\n", "workload.batch_size"),
        (b"\xff\xfe\x00name: x", "not UTF-8"),
    ):
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ConfigError, match=needle) as e:
            load_config(p)
        assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
