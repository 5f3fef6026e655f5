"""Settings of the consent service, read from `CONSENT_*` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime.settings import ServiceSettings

# DEV ONLY. Anyone who knows this key can link a subject_ref back to a guessed email address;
# production sets CONSENT_SUBJECT_KEY to a long random secret, and never changes it (a new key
# gives the same person a new subject_ref, so their older records would no longer match).
DEV_SUBJECT_KEY = "dev-only-insecure-subject-key-set-CONSENT_SUBJECT_KEY"


class ConsentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CONSENT_", extra="ignore")

    http_port: int = 8083
    database_url: SecretStr = SecretStr(
        "postgresql://visio_consent:visio_consent@127.0.0.1:5432/visio"
    )
    subject_key: SecretStr = Field(
        default=SecretStr(DEV_SUBJECT_KEY),
        description="HMAC-SHA256 key of subject_ref. The default is for development only.",
    )
    append_batch_size: int = Field(
        default=100, ge=1, description="Rows per INSERT statement when appending to the ledger."
    )
    subject_retention_days: int = Field(
        default=365,
        ge=0,
        description="How long after the appointment the subject's personal data is kept.",
    )

    @property
    def uses_dev_subject_key(self) -> bool:
        return self.subject_key.get_secret_value() == DEV_SUBJECT_KEY
