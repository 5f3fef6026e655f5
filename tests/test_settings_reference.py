"""docs/settings.md is generated from the settings models: it must say what the code reads."""

from __future__ import annotations

from pydantic import Field
from visio_deploy import settings_reference
from visio_runtime.settings import ServiceSettings


def test_the_settings_reference_matches_the_settings_models() -> None:
    assert settings_reference.main(["--check"]) == 0, (
        "docs/settings.md is out of date: uv run python -m visio_deploy.settings_reference"
    )


def test_a_new_setting_makes_the_reference_out_of_date(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Break it on purpose: a setting added to a service and not to the page is seen."""

    class WithANewSetting(ServiceSettings):
        shiny_new_knob: int = Field(default=3, description="Something an operator must know.")

    processes = settings_reference.processes()
    monkeypatch.setattr(
        settings_reference,
        "processes",
        lambda: [
            settings_reference.Process("booking", processes[0].what, WithANewSetting),
            *processes[1:],
        ],
    )
    assert "Something an operator must know." in settings_reference.render()
    assert settings_reference.main(["--check"]) == 1


def test_a_setting_is_explained_by_its_description_or_the_comment_above_it() -> None:
    page = settings_reference.render()
    # A description given in the model (runtime's shared settings) …
    assert "| `<PREFIX>_KAFKA_BOOTSTRAP_SERVERS` |" in page
    assert "Kafka brokers, host:port, comma-separated." in page
    # … and a comment written above a field (booking's consumer concurrency).
    assert "each appointment's events stay in order" in page
