"""Profiles: the six named shapes load and shape the rate as they claim; bad files name file and line."""

from __future__ import annotations

import itertools

import pytest

from harness.load.arrivals import expected_count, schedule
from harness.load.profiles import load_profile, scaled
from harness.load.regions import load_catalogue
from harness.load.yamlfile import ConfigError

NAMED = ("smoke", "steady", "follow-the-sun", "flash-crowd", "cold-start", "failover")


@pytest.fixture(scope="module")
def tz():
    return {k: r.tz for k, r in load_catalogue().regions.items()}


@pytest.mark.parametrize("name", NAMED)
def test_named_profiles_load(name, tz):
    p = load_profile(name, tz)
    assert p.shape in name or p.shape == "steady"
    assert len(p.regions) >= 3
    assert p.duration_s > 0


def test_smoke_is_short_and_covers_default_regions(tz):
    p = load_profile("smoke", tz)
    assert p.duration_s <= 60
    assert {"nairobi", "san-francisco"} <= set(p.regions)


def test_flash_crowd_surges_one_region_tenfold(tz):
    p = load_profile("flash-crowd", tz)
    at, region = p.params["at_s"], p.params["region"]
    assert p.rate_at(region, at + 1) == pytest.approx(10 * p.rate_at(region, at - 1))
    other = next(r for r in p.regions if r != region)
    assert p.rate_at(other, at + 1) == p.rate_at(other, at - 1)


def test_follow_the_sun_peaks_at_local_evening(tz):
    p = load_profile("follow-the-sun", tz)
    day = p.params["day_s"]
    # Sample the compressed day; each region's busiest moment is at its own local peak hour.
    peaks = {}
    for r in p.regions:
        best = max(range(240), key=lambda i: p.rate_at(r, i * day / 240))
        utc_h = p.params["start_utc_hour"] + 24 * best / 240
        peaks[r] = (utc_h + p.tz_offset_h(r)) % 24
    for r, local in peaks.items():
        assert abs(local - p.params["peak_local_hour"]) < 0.3, r
    assert len({round(p.rate_at(r, day / 3), 3) for r in p.regions}) > 1


def test_cold_start_gaps_outlast_the_idle_timeout(tz):
    p = load_profile("cold-start", tz)
    assert p.params["gap_s"] > p.pop_idle_timeout_s
    burst = p.params["burst_s"]
    assert p.rate_at(p.regions[0], 1) > 0
    assert p.rate_at(p.regions[0], burst + 1) == 0


def test_failover_takes_a_pop_down_inside_the_run(tz):
    p = load_profile("failover", tz)
    assert p.pop_down and 0 < p.pop_down[0]["at_s"] < p.duration_s
    half = scaled(p, p.duration_s / 2)
    assert half.pop_down[0]["at_s"] == pytest.approx(p.pop_down[0]["at_s"] / 2)


def test_schedule_matches_rate_and_ignores_responses(tz):
    p = load_profile("flash-crowd", tz)
    r = p.params["region"]
    times = list(schedule(lambda t: p.rate_at(r, t), p.max_rate(r), p.duration_s, "poisson", seed=3))
    expected = expected_count(lambda t: p.rate_at(r, t), p.duration_s)
    assert abs(len(times) - expected) < 4 * expected**0.5
    assert times == sorted(times)
    # Two load processes sharing the region carry half each.
    half = list(schedule(lambda t: p.rate_at(r, t), p.max_rate(r), p.duration_s, "poisson", seed=4, share=2))
    assert abs(len(half) - expected / 2) < 4 * (expected / 2) ** 0.5


def test_constant_arrivals_are_evenly_spaced():
    times = list(schedule(lambda t: 20.0, 20.0, 5.0, "constant", seed=1))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 100
    assert max(gaps) - min(gaps) < 1e-9


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("shape: steady\nregions: [nairobi]\nduration_s: 10\nrate: -1\n", 4, "rate: -1 is less than the minimum of 0"),
        ("shape: wobbly\nregions: [nairobi]\nduration_s: 10\nrate: 1\n", 1, "shape: 'wobbly' is not one of ['steady',"),
        ("shape: steady\nregions: [nairobi]\nduration_s: 10\n", 1, "'rate' is a required property"),
        ("shape: stages\nregions: [nairobi]\nduration_s: 10\n", 1, "'stages' is a required property"),
        ("regions: [nairobi]\nduration_s: 10\nrate: 1\nlate_threshold_ms: -1\n", 4, "late_threshold_ms: -1 is less"),
        ("regions: [nairobi]\nduration_s: 10\nrate: 1\nparams:\n  factr: 3\n", 5, "unknown key `factr`"),
        (
            "regions: [nairobi]\nduration_s: 10\nrate: 1\ncorpus:\n  sizes: [[224, 0]]\n",
            5,
            "corpus.sizes.0.1: 0 is less",
        ),
        (
            "regions: [nairobi]\nduration_s: 10\nrate: 1\ninject_rtt: maybe\n",
            4,
            "inject_rtt: 'maybe' is not of type 'boolean'",
        ),
        (
            "shape: flash-crowd\nregions: [nairobi, paris]\nduration_s: 10\nrate: 1\nparams:\n  region: sydney\n",
            6,
            "`params.region` must be one of `regions` (nairobi, paris)",
        ),
        (
            "shape: stages\nregions: [nairobi]\nduration_s: 10\nstages:\n  - {until_s: 5, rates: {nairobi: 1}}\n"
            "  - {until_s: 4, rates: {nairobi: 2}}\n",
            6,
            "stages must have increasing until_s",
        ),
        (
            "shape: failover\nregions: [nairobi, paris]\nduration_s: 10\nrate: 1\npop_down:\n"
            "  - {pop: paris, at_s: 12}\n",
            6,
            "pop_down.at_s must fall inside the run",
        ),
        ("regions: [nairobi]\nduration_s: 10\nrate: 1\nrates:\n  paris: 3\n", 5, "names region 'paris', which is not"),
        ("regions: [nairobi]\nduration_s: 10\nrate: 1\nrates:\n  <<: {nairobi: 3}\n", 5, "merge keys (<<)"),
        ("regions: [nairobi]\nduration_s: 2024-13-45\nrate: 1\n", 2, "duration_s: '2024-13-45' is not of type"),
        ("shape: steady\nregions: [nairobi, atlantis]\nduration_s: 10\nrate: 1\n", 2, "unknown region 'atlantis'"),
        ("shape: steady\nregions: [nairobi]\nduration_s: 10\nrate: 1\nrats: 2\n", 5, "unknown key `rats`"),
        (
            "shape: cold-start\nregions: [nairobi]\nduration_s: 10\nrate: 1\npop_idle_timeout_s: 5\n"
            "params:\n  gap_s: 2\n",
            6,
            "gap_s longer",
        ),
        ("shape: steady\nregions: [nairobi\n", 3, "YAML syntax error"),
    ],
)
def test_bad_profile_names_file_line_and_problem(tmp_path, tz, text, line, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile(str(f), tz)
    assert err.value.file == str(f)
    assert err.value.line == line
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("line", "expected"), [("late_threshold_ms: 0\n", 0.0), ("", 5.0), ("late_threshold_ms: 2.5\n", 2.5)]
)
def test_late_threshold_zero_is_kept_as_zero(tmp_path, tz, line, expected):
    # 0 means every send later than its intended time counts as late; it once became the default 5.
    f = tmp_path / "p.yaml"
    f.write_text("regions: [nairobi]\nduration_s: 10\nrate: 1\n" + line)
    p = load_profile(str(f), tz)
    assert p.late_threshold_ms == expected
    assert p.to_dict()["late_threshold_ms"] == expected


def test_the_schema_knows_every_shape_and_every_profile_field():
    from dataclasses import fields

    from harness.load.profiles import SHAPES, Profile
    from harness.load.yamlfile import schema

    profile_schema = schema("profile.schema.json")
    assert profile_schema["properties"]["shape"]["enum"] == list(SHAPES)
    settable = {f.name for f in fields(Profile)} - {"file", "_tz_offsets_h"}
    assert set(profile_schema["properties"]) == settable


def test_the_shipped_schemas_are_valid_json_schemas():
    from jsonschema import Draft202012Validator

    from harness.load.yamlfile import schema

    for name in ("profile.schema.json", "regions.schema.json"):
        Draft202012Validator.check_schema(schema(name))
