"""The README's test command is the one CI runs."""

from __future__ import annotations

import re

from helpers import TESTS

ROOT = TESTS.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quickstart, flags=re.S)
    assert len(commands) == 2, "the quickstart is exactly two commands"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].replace("pip install -q", "pip install") in ci.replace(
        "pip install -q", "pip install"
    )
