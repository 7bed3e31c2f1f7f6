"""The README's two quick-start commands: CI runs the test command verbatim."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_commands():
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)[:2]


def test_ci_runs_the_readme_test_command_verbatim():
    install_and_run, test = _quickstart_commands()
    assert "experiments.main" in install_and_run and "pytest" in test
    ci = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
    assert test in ci


def test_quickstart_config_exists():
    install_and_run, _ = _quickstart_commands()
    config = re.search(r"--config=(\S+)", install_and_run).group(1)
    assert os.path.exists(os.path.join(ROOT, config))
