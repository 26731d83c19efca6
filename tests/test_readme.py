"""README.md stays true: its options table is the one the code generates."""

from pathlib import Path

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
