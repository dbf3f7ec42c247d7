"""`SETTING_NAMES` lists every variable `Settings.from_env` reads, so a process that must not
inherit the operator's configuration (the bench's servers) can blank them all."""

from __future__ import annotations

import inspect
import re

from app.settings import SETTING_NAMES, Settings


def test_setting_names_are_the_variables_from_env_reads() -> None:
    source = inspect.getsource(Settings.from_env)
    read = set(re.findall(r'(?:env\.get|integer)\(\s*"([A-Z0-9_]+)"', source))
    assert read  # the pattern still finds the reads
    assert set(SETTING_NAMES) == read
    assert len(SETTING_NAMES) == len(set(SETTING_NAMES))
