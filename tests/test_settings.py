"""Settings: one class for every AGENTWATCH_* variable of the collector, one error type.

(The live `python -m collector` with bad values is in test_collector_live.py.)
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from collector.settings import Settings, SettingsError, variable
from tests.support.procs import REPO


def readme_table() -> dict[str, str]:
    """The collector's variable table in the README: {variable: default cell}."""
    section = (REPO / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    lines = section[section.index("\n|") :].strip().splitlines()
    rows: dict[str, str] = {}
    for line in lines:
        if not line.startswith("|"):
            break  # the end of the first table
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        if any(n.startswith("AGENTWATCH_") for n in names):
            assert all(n.startswith("AGENTWATCH_") for n in names), f"spell out: {cells[0]}"
            rows |= dict.fromkeys(names, cells[1])
    return rows


def test_every_readme_variable_is_a_setting_and_every_setting_is_in_the_readme() -> None:
    documented = set(readme_table())
    fields = {variable(f.name) for f in dataclasses.fields(Settings)}
    assert documented - fields == set(), "documented but not read by Settings"
    assert fields - documented == set(), "read by Settings but not in the README table"


def test_the_readme_states_the_defaults() -> None:
    defaults = Settings()
    checked = 0
    for name, cell in readme_table().items():
        single = re.fullmatch(r"`([^`]*)`", cell)
        if not single:
            continue  # "(off)", a dash, or two defaults in one row
        value = getattr(defaults, name.removeprefix("AGENTWATCH_").lower())
        if isinstance(value, bool):
            stated = single[1] == str(value).lower()
        elif isinstance(value, int | float):
            stated = float(single[1]) == value
        elif isinstance(value, Path):
            stated = Path(single[1]) == value
        else:
            stated = single[1] == value
        assert stated, f"{name}: the README says {cell}, Settings has {value!r}"
        checked += 1
    assert checked >= 20


def test_unset_or_empty_means_the_default() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({variable(f.name): " " for f in dataclasses.fields(Settings)}) == (
        Settings()
    )


def test_values_are_converted() -> None:
    s = Settings.from_env(
        {
            "AGENTWATCH_PORT": "4100",
            "AGENTWATCH_DB": "/tmp/x.db",
            "AGENTWATCH_METRICS_AUTH": "yes",
            "AGENTWATCH_LOG_LEVEL": "debug",
            "AGENTWATCH_RELAY_LOGS": "off",
            "AGENTWATCH_RELAY_TRACES": "ON",
            "AGENTWATCH_RELAY_TIMEOUT_SECONDS": "2.5",
            "AGENTWATCH_RELAY_BATCH_EVENTS": "100",
        }
    )
    assert (s.port, s.db, s.metrics_auth, s.log_level) == (4100, Path("/tmp/x.db"), True, "DEBUG")
    assert (s.relay_logs, s.relay_traces) == (False, True)
    assert (s.relay_timeout_seconds, s.relay_batch_events) == (2.5, 100)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AGENTWATCH_PORT", "http", "AGENTWATCH_PORT='http' is not a valid int"),
        ("AGENTWATCH_PORT", "70000", "AGENTWATCH_PORT must be 1-65535"),
        ("AGENTWATCH_CAPTURE", "everything", "AGENTWATCH_CAPTURE must be one of"),
        ("AGENTWATCH_METRICS_AUTH", "sometimes", "AGENTWATCH_METRICS_AUTH='sometimes' is not"),
        ("AGENTWATCH_LOG_LEVEL", "LOUD", "AGENTWATCH_LOG_LEVEL must be one of"),
        ("AGENTWATCH_BODY_TIMEOUT_SECONDS", "inf", "AGENTWATCH_BODY_TIMEOUT_SECONDS='inf'"),
        ("AGENTWATCH_RETENTION_INTERVAL_SECONDS", "0", "must be >= 1"),
        ("AGENTWATCH_RELAY_BATCH_EVENTS", "lots", "AGENTWATCH_RELAY_BATCH_EVENTS='lots'"),
        ("AGENTWATCH_RELAY_BATCH_EVENTS", "-1", "AGENTWATCH_RELAY_BATCH_EVENTS must be > 0"),
        ("AGENTWATCH_RELAY_TIMEOUT_SECONDS", "0", "AGENTWATCH_RELAY_TIMEOUT_SECONDS must be > 0"),
        ("AGENTWATCH_RELAY_TRACES", "maybe", "AGENTWATCH_RELAY_TRACES='maybe' is not one of"),
    ],
)
def test_a_bad_value_is_a_settings_error_naming_the_variable(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as err:
        Settings.from_env({name: value})
    assert name in str(err.value) and "\n" not in str(err.value)
