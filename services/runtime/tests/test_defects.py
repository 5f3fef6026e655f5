"""Defect switches break a service on purpose for the proofs' tests; production refuses them:
production mode's settings check lists each one, a service will not be built with one set, and
asking whether one is on raises."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from visio_runtime import defects
from visio_runtime.service import build_runtime
from visio_runtime.settings import ServiceSettings


class _ProcessSettings(ServiceSettings):
    """A process's settings (production mode checks those, not the base class alone)."""


def test_a_defect_is_off_unless_set_and_strikes_once_when_asked_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VISIO_DEFECT_DROP_REPLY", raising=False)
    assert not defects.on("DROP_REPLY")
    for off in ("", "0", "false", " No "):  # set, to a value that means off
        monkeypatch.setenv("VISIO_DEFECT_DROP_REPLY", off)
        assert not defects.on("DROP_REPLY")
        assert defects.switched_on() == []
    monkeypatch.setenv("VISIO_DEFECT_DROP_REPLY", "1")
    assert defects.on("DROP_REPLY")
    assert defects.once("DROP_REPLY", "test-key")
    assert not defects.once("DROP_REPLY", "test-key")
    with pytest.raises(ValueError, match="unknown defect"):
        defects.on("NO_SUCH_DEFECT")


def test_production_refuses_every_defect_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIO_ENVIRONMENT", "production")
    monkeypatch.setenv("VISIO_DEFECT_EMAIL_TWICE", "1")
    with pytest.raises(defects.DefectInProduction, match="VISIO_DEFECT_EMAIL_TWICE"):
        defects.on("EMAIL_TWICE")
    with pytest.raises(defects.DefectInProduction, match="VISIO_ENVIRONMENT=production"):
        build_runtime("booking", ServiceSettings())
    # Production mode's settings check lists it among what it refuses, by its variable.
    with pytest.raises(ValidationError) as refused:
        _ProcessSettings()
    assert "VISIO_DEFECT_EMAIL_TWICE: a defect switch" in str(refused.value)
    # Without the switch, none of it.
    monkeypatch.delenv("VISIO_DEFECT_EMAIL_TWICE")
    assert not defects.on("EMAIL_TWICE")
    build_runtime("booking", ServiceSettings())
    assert defects.findings() == []
