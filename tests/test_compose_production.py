"""deploy/compose/production.yml, checked without a container engine (none runs here; the file
was never started here — docs/compose-production.md says so).

What is proven: the file is valid Compose (the vendored Compose Specification JSON Schema);
its rules (production everywhere, no PLAINTEXT, three brokers, replication 3 and
min.insync.replicas 2, ACLs enforced with the admin the only super user, pinned images, no
secret written in it); the real first-start job (`visio_deploy.compose_init`) makes a CA, the
certificates and the secrets, and keeps them on a second start; and each process's
environment, as the file gives it and with the secrets that job made (read by the real
secret-env.sh), passes its settings class's production validation. Each rule's checker is also
fed a broken copy and seen to fail.

What only an engine proves: that the containers start, the brokers form a quorum with these
listeners, kafka-init's credentials and ACLs apply, and the services work under them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography import x509
from visio_alerts.settings import AlertsSettings
from visio_booking.settings import BookingSettings
from visio_consent.settings import ConsentSettings
from visio_deploy.compose_init import BROKERS, PROCESSES, initialise
from visio_meetings.settings import MeetingsSettings
from visio_notifications.settings import NotificationsSettings
from visio_runtime.settings import ServiceSettings
from visio_shared.links import KeyPurpose, LinkKeys

REPO = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO / "deploy/compose"
PRODUCTION = COMPOSE_DIR / "production.yml"
SERVER_PROPERTIES = COMPOSE_DIR / "kafka/server.properties"
SECRET_ENV = COMPOSE_DIR / "secret-env.sh"
COMPOSE_JSON_SCHEMA = REPO / "deploy/compose-spec/compose-spec.json"
SECRETS_MOUNT = "/run/visio/secrets"

SETTINGS: dict[str, type[ServiceSettings]] = {
    "booking": BookingSettings,
    "meetings": MeetingsSettings,
    "notifications": NotificationsSettings,
    "consent": ConsentSettings,
    "alerts": AlertsSettings,
}
# What the operator gives `docker compose` (the file's `${VARIABLE:?why}`).
OPERATOR_ENV = {
    "VISIO_BOOKING_PUBLIC_HOST": "rendez-vous.caf.example",
    "VISIO_CONSENT_PUBLIC_HOST": "consentements.caf.example",
    "VISIO_ENTRA_TENANT_ID": "0f0e0d0c-0000-4000-8000-000000000001",
    "VISIO_GRAPH_CLIENT_ID": "0f0e0d0c-0000-4000-8000-000000000002",
    "VISIO_ADVISOR_CLIENT_ID": "0f0e0d0c-0000-4000-8000-000000000003",
}
Compose = dict[str, Any]


@pytest.fixture(scope="module")
def text() -> str:
    return PRODUCTION.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(text: str) -> Compose:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def properties() -> dict[str, str]:
    return read_properties(SERVER_PROPERTIES.read_text(encoding="utf-8"))


def read_properties(text: str) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


# --- Validity ---------------------------------------------------------------------------------


def test_the_compose_json_schema_accepts_the_file(compose: Compose) -> None:
    schema = json.loads(COMPOSE_JSON_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # Control: the same validator refuses a misspelt key.
    broken = copy.deepcopy(compose)
    broken["services"]["booking"]["environmnt"] = {}
    assert list(validator.iter_errors(broken))


def test_every_volume_and_mounted_file_exists(compose: Compose) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"
        build = service.get("build")
        if build:
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).is_file()


# --- The rules --------------------------------------------------------------------------------

_EXACT_TAG = re.compile(r"^[^:@\s]+:v?\d+\.\d+\.\d+$|^postgres:\d{2,}\.\d+$")
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::?[-?](?P<rest>[^}]*))?\}")


def rule_problems(compose: Compose, text: str, properties: dict[str, str]) -> list[str]:
    """Every way the file breaks the production rules; [] when it keeps them all."""
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = compose["services"]
    for name, service in services.items():
        env = service.get("environment", {})
        if env.get("VISIO_ENVIRONMENT") != "production":
            problems.append(f"{name}: VISIO_ENVIRONMENT is not production")
        image = service.get("image")
        if image is not None and not _EXACT_TAG.match(image):
            problems.append(f"{name}: image {image} not pinned to an exact version")
        if image is None and "build" not in service:
            problems.append(f"{name}: neither an image nor a build")
        for variable, value in env.items():
            value = str(value)
            if "PLAINTEXT" in value:
                problems.append(f"{name}: {variable}={value}")
            if variable.endswith("KAFKA_SECURITY_PROTOCOL") and value != "SASL_SSL":
                problems.append(f"{name}: {variable}={value}")
            if variable.endswith("KAFKA_ENABLE_IDEMPOTENCE") and value != "true":
                problems.append(f"{name}: {variable}={value}")
            if variable.endswith("TOPIC_REPLICATION_FACTOR") and int(value) < 3:
                problems.append(f"{name}: {variable}={value}")
            if variable.endswith("TOPIC_MIN_INSYNC_REPLICAS") and int(value) < 2:
                problems.append(f"{name}: {variable}={value}")
            if variable.endswith("_URL") and value.startswith("http://"):
                problems.append(f"{name}: {variable} is http://")
        # Every process that talks to Kafka says how, with its own principal.
        for variable in env:
            if variable.endswith("KAFKA_BOOTSTRAP_SERVERS"):
                prefix = variable.removesuffix("KAFKA_BOOTSTRAP_SERVERS")
                if env.get(f"{prefix}KAFKA_SASL_USERNAME") != name:
                    problems.append(f"{name}: not its own Kafka principal")
                if f"{prefix}KAFKA_SECURITY_PROTOCOL" not in env:
                    problems.append(f"{name}: no {prefix}KAFKA_SECURITY_PROTOCOL (PLAINTEXT)")
    brokers = [name for name, svc in services.items() if re.fullmatch(r"kafka-\d", name)]
    if len(brokers) != 3:
        problems.append(f"{len(brokers)} brokers, not 3")
    voters = properties.get("controller.quorum.voters", "")
    if sorted(v.split("@")[1].split(":")[0] for v in voters.split(",") if v) != sorted(brokers):
        problems.append(f"controller.quorum.voters {voters} is not the brokers")
    protocols = dict(
        pair.split(":") for pair in properties.get("listener.security.protocol.map", "").split(",")
    )
    listeners = [e.split("://")[0] for e in properties.get("listeners", "").split(",")]
    for listener in listeners:
        if protocols.get(listener) not in ("SASL_SSL", "SSL"):
            problems.append(f"listener {listener}: {protocols.get(listener)}")
    expected = {
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:admin",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "auto.create.topics.enable": "false",
    }
    for key, value in expected.items():
        if properties.get(key) != value:
            problems.append(f"server.properties: {key}={properties.get(key)}, not {value}")
    problems += [f"secret written in the file: {found}" for found in written_secrets(text)]
    return problems


_SECRET_NAMES = re.compile(r"PASSWORD|SECRET|_KEYS?$|KEY$|TOKEN", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def written_secrets(text: str) -> list[str]:
    """Secret-looking settings given a value instead of a file, and passwords in URLs."""
    loaded = yaml.safe_load(text)
    found = []
    for name, service in loaded["services"].items():
        for variable, value in service.get("environment", {}).items():
            value = str(value)
            is_file = value.startswith("/run/visio/")
            named_secret = _SECRET_NAMES.search(variable) and not variable.endswith("_FILE")
            if named_secret and not is_file:
                found.append(f"{name}: {variable}")
            if _URL_PASSWORD.search(value):
                found.append(f"{name}: {variable} has a password in its URL")
    # Anything that looks like a generated key (32 random bytes, base64) anywhere in the text.
    found += re.findall(r"[A-Za-z0-9_\-+/]{43,}", text)
    return found


def test_the_file_keeps_the_production_rules(
    compose: Compose, text: str, properties: dict[str, str]
) -> None:
    assert rule_problems(compose, text, properties) == []


@pytest.mark.parametrize(
    "breakage",
    [
        "development",
        "plaintext",
        "two-brokers",
        "replication",
        "insync",
        "open-acls",
        "unpinned",
        "secret",
        "http",
    ],
)
def test_the_rule_check_sees_each_rule_broken(
    breakage: str, compose: Compose, text: str, properties: dict[str, str]
) -> None:
    broken, props, broken_text = copy.deepcopy(compose), dict(properties), text
    booking = broken["services"]["booking"]["environment"]
    match breakage:
        case "development":
            broken["services"]["postgres"]["environment"]["VISIO_ENVIRONMENT"] = "development"
        case "plaintext":
            booking["BOOKING_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
        case "two-brokers":
            del broken["services"]["kafka-3"]
        case "replication":
            props["default.replication.factor"] = "1"
        case "insync":
            booking["BOOKING_TOPIC_MIN_INSYNC_REPLICAS"] = "1"
        case "open-acls":
            props["allow.everyone.if.no.acl.found"] = "true"
        case "unpinned":
            broken["services"]["mailpit"]["image"] = "axllent/mailpit:latest"
        case "secret":
            broken_text = text.replace(
                "SECRET__CONSENT_SUBJECT_KEY: /run/visio/secrets/subject-key",
                "CONSENT_SUBJECT_KEY: Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4MTI",
            )
            assert broken_text != text
            broken = yaml.safe_load(broken_text)
        case "http":
            booking["BOOKING_DATABASE_URL"] = "http://x"
    assert rule_problems(broken, broken_text, props) != []


def test_the_acls_are_applied_by_kafka_init_from_visio_rdv_ops_acls(compose: Compose) -> None:
    from visio_deploy.cli import build_parser

    services = compose["services"]
    acls = services["acls"]
    command = acls["entrypoint"][-1]
    words, _, target = command.partition(" > ")
    argv = words.split()
    assert argv[:3] == ["visio-rdv", "ops", "acls"]
    build_parser().parse_args(argv[1:])  # a real command line of the CLI
    assert target == "/run/visio/acls/acls.sh"
    init_script = (COMPOSE_DIR / "kafka/init.sh").read_text(encoding="utf-8")
    assert "sh /run/visio/acls/acls.sh" in init_script
    for principal in PROCESSES:
        assert principal in init_script
    assert services["kafka-init"]["depends_on"]["acls"]["condition"] == (
        "service_completed_successfully"
    )
    # Every process waits for its credentials and ACLs.
    for name in SETTINGS:
        assert services[name]["depends_on"]["kafka-init"]["condition"] == (
            "service_completed_successfully"
        )


# --- The first start: CA, certificates, secrets -----------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init")
    initialise(root)
    # The operator's own: the Entra ID application secret, put in place after the first start.
    (root / "meetings/graph-client-secret").write_text("operator-provided-entra-secret\n")
    (root / "booking/advisor-sign-in-secret").write_text("operator-provided-sign-in-secret\n")
    return root


def test_the_init_job_makes_a_ca_and_a_certificate_per_host(generated: Path) -> None:
    ca = x509.load_pem_x509_certificate((generated / "ca/ca.crt").read_bytes())
    for host in (*BROKERS, "postgres", "mailpit", "booking", "consent"):
        cert = x509.load_pem_x509_certificate((generated / host / "tls.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [host]
        # And Python's TLS stack accepts the key, the chain and the CA as a server would.
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(generated / host / "tls.crt", generated / host / "tls.key")
    # Kafka's PEM keystore: key first, then the chain.
    keystore = (generated / "kafka-1/keystore.pem").read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----")
    assert keystore.count("BEGIN CERTIFICATE") == 2


def test_the_secrets_are_private_separate_and_kept(generated: Path) -> None:
    for folder in generated.iterdir():
        assert folder.stat().st_mode & 0o777 in (0o700, 0o755), folder
        for file in folder.iterdir():
            if file.name not in ("ca.crt", "tls.crt"):
                assert file.stat().st_mode & 0o077 == 0, file
    # Each service holds only its purposes' link keys, each its own key, no master.
    consent = LinkKeys.parse((generated / "consent/link-keys").read_text())
    assert consent.purposes() == {KeyPurpose.RECORDING, KeyPurpose.CONSENTS}
    booking = LinkKeys.parse((generated / "booking/link-keys").read_text())
    assert booking.purposes() == set(KeyPurpose)
    passwords = {(generated / p / "kafka-password").read_text() for p in PROCESSES}
    assert len(passwords) == len(PROCESSES)
    # Consent's folder holds no key of booking's « Mon rendez-vous ».
    assert "manage" not in (generated / "consent/link-keys").read_text()
    before = {p: p.read_bytes() for p in generated.rglob("*") if p.is_file()}
    initialise(generated)
    assert {p: p.read_bytes() for p in generated.rglob("*") if p.is_file()} == before


# --- Each process's environment, as the file gives it, in production mode ----------------------


def resolved_environment(service: dict[str, Any], folder: Path) -> dict[str, str]:
    """The process's environment in its container: the file's values with the operator's
    variables, its secrets folder where it is mounted, and the SECRET__ files read by the real
    secret-env.sh (run here with COMMAND=env)."""

    def interpolate(value: str) -> str:
        return _INTERPOLATION.sub(lambda m: OPERATOR_ENV[m["name"]], value)

    env = {
        variable: interpolate(str(value)).replace(SECRETS_MOUNT, str(folder))
        for variable, value in service["environment"].items()
    }
    result = subprocess.run(
        ["sh", str(SECRET_ENV)],
        env={**env, "COMMAND": "env", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert not any(name.startswith("SECRET__") for name in seen), "read and removed"
    return {name: value for name, value in seen.items() if name not in ("PATH", "COMMAND")}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_process_accepts_its_environment_in_production(
    name: str, compose: Compose, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"][name]
    assert service["entrypoint"] == ["/bin/sh", "/opt/visio/secret-env.sh"]
    env = resolved_environment(service, generated / name)
    for variable in list(os.environ):
        if variable.startswith(("VISIO_", "DATABASE_URL", f"{name.upper()}_")):
            monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    settings = SETTINGS[name]()  # production validation runs here, and would refuse
    assert settings.environment == "production"
    assert settings.production_findings() == []
    assert settings.waived_production_checks == []
    assert settings.kafka_sasl_username == name
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == (
        (generated / name / "kafka-password").read_text()
    )


def test_a_secret_missing_from_the_environment_is_refused(
    compose: Compose, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: the same path with one secret not given (consent's checkpoint key) refuses."""
    from visio_runtime.production import ProductionRefusal

    service = copy.deepcopy(compose["services"]["consent"])
    del service["environment"]["SECRET__CONSENT_CHECKPOINT_SIGNING_KEY"]
    env = resolved_environment(service, generated / "consent")
    for variable in list(os.environ):
        if variable.startswith(("VISIO_", "DATABASE_URL", "CONSENT_")):
            monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises((ProductionRefusal, ValueError), match="CONSENT_CHECKPOINT_SIGNING_KEY"):
        ConsentSettings()
