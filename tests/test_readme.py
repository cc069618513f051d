"""The README's claims that code can check: its list of settings is every setting, and only settings."""

from __future__ import annotations

import re
from pathlib import Path

from lookalike.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_settings_list_names_every_setting_and_only_settings() -> None:
    text = README.read_text()
    section = text[text.index("Every setting is an environment variable") : text.index("## Quality and speed")]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]*[A-Z0-9])`", section))
    assert listed == {name.upper() for name in Settings.model_fields}
