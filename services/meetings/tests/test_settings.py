"""Settings refuse what must never run: clear-text Graph or Entra, ambiguous credentials."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from visio_meetings.settings import MeetingsSettings

TENANT = "https://login.microsoftonline.com/00000000-0000-0000-0000-0000000000ca"


def test_an_http_authority_is_refused_at_start() -> None:
    with pytest.raises(pydantic.ValidationError, match="MEETINGS_AUTHORITY must be an https://"):
        MeetingsSettings(
            authority="http://127.0.0.1:8443/tenant", client_id="app", client_secret="s"
        )


def test_an_http_graph_base_url_is_refused_at_start() -> None:
    with pytest.raises(
        pydantic.ValidationError, match="MEETINGS_GRAPH_BASE_URL must be an https://"
    ):
        MeetingsSettings(
            authority=TENANT,
            client_id="app",
            client_secret="s",
            graph_base_url="http://graph.example/v1.0",
        )


def test_the_environment_is_read_with_the_meetings_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEETINGS_AUTHORITY", "http://login.example/tenant")
    monkeypatch.setenv("MEETINGS_CLIENT_ID", "app")
    with pytest.raises(pydantic.ValidationError, match="https://"):
        MeetingsSettings()  # type: ignore[call-arg]
    monkeypatch.setenv("MEETINGS_AUTHORITY", TENANT + "/")
    monkeypatch.setenv("MEETINGS_CLIENT_SECRET", "secret")
    settings = MeetingsSettings()  # type: ignore[call-arg]
    assert settings.authority == TENANT
    assert settings.http_port == 8081
    assert settings.client_credential() == "secret"


def test_authority_and_client_id_have_no_silent_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEETINGS_AUTHORITY", raising=False)
    monkeypatch.delenv("MEETINGS_CLIENT_ID", raising=False)
    with pytest.raises(pydantic.ValidationError, match="authority"):
        MeetingsSettings()  # type: ignore[call-arg]


def test_a_secret_and_a_certificate_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="not both"):
        MeetingsSettings(
            authority=TENANT,
            client_id="app",
            client_secret="s",
            client_certificate_path=tmp_path / "cert.pem",
        )


def test_a_pem_without_certificate_needs_a_thumbprint(tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    settings = MeetingsSettings(authority=TENANT, client_id="app", client_certificate_path=pem)
    with pytest.raises(ValueError, match="THUMBPRINT"):
        settings.client_credential()
    with_thumbprint = settings.model_copy(update={"client_certificate_thumbprint": "AB12"})
    assert with_thumbprint.client_credential() == {
        "private_key": pem.read_text(),
        "thumbprint": "AB12",
    }
