"""README.md stays true: its options table is the one the code generates, the files it names
exist, the wheel it installs is the version's. tests/test_readme_path.py runs its quickstart."""

import re
from pathlib import Path

from patient_sidekiq import __version__
from patient_sidekiq.config.model import options_table_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_options_table_matches_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- options-table:start -->\n") + len("<!-- options-table:start -->\n")
    end = text.index("<!-- options-table:end -->")
    assert text[start:end].strip() == options_table_markdown().strip(), (
        "README options table is stale: paste options_table_markdown() between the markers"
    )


def test_readme_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "scripts/run" in text
    assert "scripts/test" in text


def test_files_and_scripts_the_readme_names_exist() -> None:
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/~.-])((?:scripts|deploy)/[\w.-]*\w)", text))
    named |= {name for name in ("Dockerfile", ".dockerignore") if name in text}
    assert {
        "scripts/run",
        "scripts/setup",
        "scripts/test",
        "deploy/patient-sidekiq.service",
    } <= named
    repo = README.parent
    assert [name for name in sorted(named) if not (repo / name).exists()] == []


def test_the_wheel_the_readme_installs_is_the_one_build_writes() -> None:
    text = README.read_text(encoding="utf-8")
    wheels = set(re.findall(r"dist/(patient_sidekiq-\S+?\.whl)", text))
    assert wheels == {f"patient_sidekiq-{__version__}-py3-none-any.whl"}
