"""``[retention]`` in the service's configuration: durations, "off", the default, and refusals that say why."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tenure.service.config import ConfigError, ServiceConfig
from tenure.store.retention import DEFAULT_RETENTION, KEEP_EVERYTHING, RetentionPolicy

DAY = timedelta(days=1)


def load(tmp_path: Path, text: str) -> ServiceConfig:
    path = tmp_path / "tenure.toml"
    path.write_text(text)
    return ServiceConfig.load(path, env={})


def test_without_a_section_the_default_policy_applies(tmp_path: Path) -> None:
    assert ServiceConfig.load(env={}).retention_policy() == DEFAULT_RETENTION
    assert load(tmp_path, "[auth]\nenabled = false\n").retention_policy() == DEFAULT_RETENTION
    assert RetentionPolicy(journal=30 * DAY, waits=7 * DAY, flows=7 * DAY, resources=None) == DEFAULT_RETENTION
    assert DEFAULT_RETENTION.batch == 500


def test_durations_take_units_or_seconds_and_off_keeps_for_ever(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[retention]
journal = "90d"
waits = "12h"
flows = 3600
resources = "2w"
batch = 100
""",
    )
    assert config.retention_policy() == RetentionPolicy(
        journal=90 * DAY, waits=timedelta(hours=12), flows=timedelta(hours=1), resources=14 * DAY, batch=100
    )
    off = load(tmp_path, '[retention]\njournal = "off"\nwaits = 0\nflows = false\nresources = "OFF"\n')
    assert off.retention_policy() == KEEP_EVERYTHING
    assert not off.retention_policy().prunes


def test_keys_left_out_keep_their_default(tmp_path: Path) -> None:
    config = load(tmp_path, '[retention]\nresources = "365d"\n')
    assert config.retention_policy() == RetentionPolicy(resources=365 * DAY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[retention]\njournal = "30 days"\n', '[retention] journal must be a duration such as "30d"'),
        ('[retention]\nwaits = "-1d"\n', "[retention] waits must be a duration"),
        ("[retention]\nflows = -5\n", "[retention] flows must be a duration"),
        ("[retention]\nflows = 1.5\n", "[retention] flows must be a duration"),
        ("[retention]\nresources = true\n", "[retention] resources must be a duration"),
        ('[retention]\njournal = "40000d"\n', "at most 36500 days"),
        ("[retention]\nbatch = 0\n", "[retention] batch must be a whole number of rows from 2 to 10000"),
        ("[retention]\nbatch = 1\n", "from 2 to 10000"),
        ('[retention]\nbatch = "500"\n', "batch must be a whole number"),
        ("[retention]\nhistory = '30d'\n", "[retention]: unknown key(s) history; known: journal, waits, flows"),
        ("retention = 5\n", "[retention] must be a table"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_key_and_what_it_accepts(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert message in str(info.value)
    assert "tenure.toml" in str(info.value)
