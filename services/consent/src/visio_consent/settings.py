"""Settings of the consent service, read from `CONSENT_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from visio_runtime import production
from visio_runtime.caf_settings import CafSettings
from visio_runtime.production import Finding
from visio_runtime.settings import LinkSettings, ServiceSettings
from visio_shared.links import KeyPurpose

# DEV ONLY. Anyone who knows this key can link a subject_ref back to a guessed email address;
# production sets CONSENT_SUBJECT_KEY to a long random secret, and never changes it (a new key
# gives the same person a new subject_ref, so their older records would no longer match).
DEV_SUBJECT_KEY = "dev-only-insecure-subject-key-set-CONSENT_SUBJECT_KEY"

# Where the development checkpoint key is generated when CONSENT_CHECKPOINT_SIGNING_KEY is unset.
DEV_SIGNING_KEY_FILE = "consent-checkpoint-key.DEV-ONLY.pem"


class ConsentSettings(ServiceSettings, LinkSettings, CafSettings):
    """`CONSENT_LINK_KEYS` (from LinkSettings) turns on the self-service pages « Enregistrement »
    and « Mes consentements »; unset, they answer 404. `CONSENT_CAF_CONTACTS` (from CafSettings)
    gives each Caf's contact, mediator and right-of-access address those pages show."""

    model_config = SettingsConfigDict(env_prefix="CONSENT_", extra="ignore")

    # Reads the links of its two pages; never « Mon rendez-vous » (which cancels).
    LINK_PURPOSES: ClassVar[frozenset[KeyPurpose]] = frozenset(
        {KeyPurpose.RECORDING, KeyPurpose.CONSENTS}
    )

    http_port: int = 8083
    database_url: SecretStr = SecretStr(
        "postgresql://visio_consent:visio_consent@127.0.0.1:5432/visio"
    )
    subject_key: SecretStr = Field(
        default=SecretStr(DEV_SUBJECT_KEY),
        description="HMAC-SHA256 key of subject_ref. The default is for development only.",
    )
    append_batch_size: int = Field(
        default=250,
        ge=1,
        # Measured with `visio-rdv consent bench` on 2 cores: 100 → ~6,000 appends/s,
        # 250 → ~9,700, 500 → 7,000–9,900, 1,000 → ~6,900 (one commit per batch dominates below).
        description="Rows per INSERT statement when appending to the ledger.",
    )
    subject_retention_days: int = Field(
        default=365,
        ge=0,
        description="How long after the appointment the subject's personal data is kept.",
    )
    var_dir: Path = Field(
        default=Path("var"),
        description="Local state: the checkpoint file and, in development, the checkpoint key. "
        "A relative path is relative to the checkout's root (see `anchored`), never to the "
        "working directory.",
    )
    checkpoint_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            "Ed25519 private key that signs checkpoints: PKCS#8 PEM, or the 32-byte seed in "
            "base64. Unset: a development key is generated under var_dir (never in production)."
        ),
    )
    checkpoint_trusted_keys: list[str] = Field(
        default_factory=list,
        description=(
            "Ed25519 public keys (32 bytes, base64) whose checkpoints verification also "
            "accepts besides the signing key's own: the keys used before a rotation."
        ),
    )
    # The export of a person's data: each service answers for its own part on its admin port
    # (visio_runtime.personal_data); unset, that part is reported missing.
    booking_internal_url: str | None = Field(
        default=None, description="Booking's admin port, e.g. http://booking:9080."
    )
    meetings_internal_url: str | None = Field(
        default=None, description="Meetings' admin port, e.g. http://meetings:9081."
    )
    notifications_internal_url: str | None = Field(
        default=None, description="Notifications' admin port, e.g. http://notifications:9082."
    )
    export_deadline_s: float = Field(
        default=5.0,
        gt=0,
        description="How long the export waits for each service; one that has not answered "
        "by then is named in the export as missing, never silently left out.",
    )
    checkpoint_file: Path | None = Field(
        default=None,
        description="JSON lines file of signed checkpoints (default: var_dir/consent-checkpoints"
        ".jsonl). Keep it off the database host.",
    )
    checkpoint_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="How often a checkpoint is signed when the ledger has grown since the last.",
    )
    max_unsigned_age_s: float = Field(
        default=900.0,
        ge=0,
        description=(
            "The bound of `consent verify`: records appended after the newest signed checkpoint "
            "may be this old at most (their oldest, by recorded_at), else verify fails. Three "
            "checkpoint intervals by default: the schedule signs them well before. Keep it "
            "above checkpoint_interval_s, or verify fails between two scheduled checkpoints."
        ),
    )
    max_body_bytes: int = Field(default=4096, ge=256, description="Largest HTTP request body.")
    booking_public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Booking's public address: a person whose link expired or is not valid is "
        "sent to its « nouveau lien » page to get a fresh one by email.",
    )
    link_attempts_per_hour: int = Field(
        default=30,
        ge=1,
        description="Page views and form posts allowed per self-service link and hour; more get "
        "a « trop de tentatives » page until the hour is over.",
    )

    def production_findings(self) -> list[Finding]:
        findings = super().production_findings()
        subject_key = self.subject_key.get_secret_value()
        if self.uses_dev_subject_key or production.is_development_secret(subject_key):
            findings.append(
                Finding(
                    production.env_name(self, "subject_key"),
                    "the development subject key: anyone could link a subject_ref to a guessed "
                    "address; set a long random secret, once",
                )
            )
        elif len(subject_key) < 32:
            findings.append(
                Finding(production.env_name(self, "subject_key"), "shorter than 32 characters")
            )
        if self.checkpoint_signing_key is None:
            findings.append(
                Finding(
                    production.env_name(self, "checkpoint_signing_key"),
                    "unset: a development key would be generated beside the checkpoint file, "
                    "and its signatures would prove nothing",
                )
            )
        elif production.is_development_secret(self.checkpoint_signing_key.get_secret_value()):
            findings.append(
                Finding(production.env_name(self, "checkpoint_signing_key"), "a development key")
            )
        return findings

    @property
    def uses_dev_subject_key(self) -> bool:
        return self.subject_key.get_secret_value() == DEV_SUBJECT_KEY

    def anchored(self, base: Path) -> ConsentSettings:
        """These settings with `var_dir` and `checkpoint_file` made absolute against `base`:
        the service and every command then name the same files from any working directory.
        `base` is the checkout's root (`visio_runtime.local_stack.path_base`)."""
        update: dict[str, Path] = {}
        if not self.var_dir.is_absolute():
            update["var_dir"] = base / self.var_dir
        if self.checkpoint_file is not None and not self.checkpoint_file.is_absolute():
            update["checkpoint_file"] = base / self.checkpoint_file
        if not update:
            return self
        copied = self.model_copy(update=update)
        # Still the value its source gave (or the default): the line a command prints about
        # where each setting came from must not change because a path was made absolute.
        copied.__pydantic_fields_set__ = set(self.model_fields_set)
        return copied

    @property
    def checkpoints_path(self) -> Path:
        return self.checkpoint_file or self.var_dir / "consent-checkpoints.jsonl"

    @property
    def dev_signing_key_path(self) -> Path:
        return self.var_dir / DEV_SIGNING_KEY_FILE
