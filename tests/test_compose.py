"""docker-compose.yml and the service Dockerfile, checked without a Docker engine.

No engine answers here or in CI, so validity is proven by two independent validators (the
compose-spec package and the Compose Specification's own JSON Schema) plus the cross-references
a validator cannot see: service names, build args, shared volumes, health-check ports.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import compose_spec
import jsonschema
import pytest
import yaml
from jsonschema.protocols import Validator

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy/docker/Dockerfile"
DOCKERFILE_IN_COMPOSE = "deploy/docker/Dockerfile"
HEALTHCHECK_SCRIPT = REPO / "deploy/docker/healthcheck.py"
# The Compose Specification's JSON Schema, kept in the repository (see its README).
COMPOSE_JSON_SCHEMA = REPO / "deploy/compose-spec/compose-spec.json"

Services = dict[str, dict[str, Any]]

# The four services: env prefix and HTTP port.
APP_SERVICES = {
    "booking": ("BOOKING_", 8080),
    "meetings": ("MEETINGS_", 8081),
    "notifications": ("NOTIFICATIONS_", 8082),
    "consent": ("CONSENT_", 8083),
}


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(compose_text)
    assert isinstance(loaded, dict), "docker-compose.yml must be a mapping"
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> Services:
    loaded: Services = compose["services"]
    return loaded


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return DOCKERFILE.read_text(encoding="utf-8")


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name → condition, for both the list and the mapping syntax."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _built_services(services: Services) -> Services:
    return {name: svc for name, svc in services.items() if "build" in svc}


# --- Validity ---------------------------------------------------------------------------------


def test_compose_spec_package_accepts_the_file(compose_text: str, services: Services) -> None:
    # Plain from_yaml, i.e. merge keys not applied: the file must not need them.
    parsed = compose_spec.PyCompose.from_yaml(compose_text)
    parsed.validate()  # every volume/network/config/secret a service uses is declared
    spec = parsed.to_spec()  # the full pydantic model of the specification

    assert parsed.service_names() == list(services)
    assert spec.services is not None and set(spec.services) == set(services)


def test_compose_spec_package_refuses_merge_keys_and_unknown_fields() -> None:
    # Control: shows the validator above would catch what the file must not contain.
    with pytest.raises(ValueError, match="<<"):
        compose_spec.PyCompose.from_yaml(
            "x-base: &base\n  image: busybox\nservices:\n  a:\n    <<: *base\n"
        )
    with pytest.raises(ValueError, match="imagee"):
        compose_spec.PyCompose.from_yaml("services:\n  a:\n    imagee: busybox\n")


def test_compose_file_uses_no_anchors_or_aliases(compose_text: str) -> None:
    tokens = yaml.scan(compose_text, Loader=yaml.SafeLoader)
    shared = [t for t in tokens if isinstance(t, yaml.AnchorToken | yaml.AliasToken)]
    assert shared == [], "write every service out in full: no YAML anchors or aliases"


def _compose_schema_validator() -> Validator:
    if not COMPOSE_JSON_SCHEMA.is_file():
        pytest.fail(
            f"Compose Specification JSON Schema not found at {COMPOSE_JSON_SCHEMA} "
            "(compose-spec/compose-spec, schema/compose-spec.json; see deploy/compose-spec/)."
        )
    schema = json.loads(COMPOSE_JSON_SCHEMA.read_text(encoding="utf-8"))
    # The schema declares "https://json-schema.org/draft-07/schema", a spelling jsonschema does
    # not map to a draft (it would fall back to the newest one, with a warning): it is Draft 7.
    if "draft-07" in schema.get("$schema", ""):
        validator_class = jsonschema.Draft7Validator
    else:
        validator_class = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft7Validator
        )
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_compose_file_matches_the_specification_json_schema(compose: dict[str, Any]) -> None:
    validator = _compose_schema_validator()
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == []


def test_json_schema_rejects_an_invalid_compose_file() -> None:
    # Control: the schema really constrains services (a misspelt key, a non-list port list).
    validator = _compose_schema_validator()
    bad = {"services": {"a": {"image": "busybox", "imagee": "x", "ports": "8080:8080"}}}
    failing = {"/".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad)}
    assert {"services/a", "services/a/ports"} <= failing


# --- Cross-references -------------------------------------------------------------------------


def test_every_dependency_is_a_defined_service(services: Services) -> None:
    missing = {
        (name, dep)
        for name, svc in services.items()
        for dep in _depends_on(svc)
        if dep not in services
    }
    assert missing == set()


def test_healthy_conditions_wait_on_services_that_have_a_healthcheck(services: Services) -> None:
    # service_healthy on a container without a healthcheck makes `compose up` fail.
    for name, svc in services.items():
        for dep, condition in _depends_on(svc).items():
            if condition != "service_healthy":
                continue
            target = services[dep]
            healthcheck = target.get("healthcheck", {})
            assert not healthcheck.get("disable", False), f"{name} waits on {dep}'s health"
            # Either its own healthcheck or the HEALTHCHECK of our Dockerfile.
            assert "test" in healthcheck or "build" in target, f"{dep} has no healthcheck"


def test_database_users_start_after_migrations(services: Services) -> None:
    for name, (prefix, _port_number) in APP_SERVICES.items():
        env = services[name]["environment"]
        assert f"{prefix}DATABASE_URL" in env
        assert _depends_on(services[name]).get("migrate") == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["build"]["args"]["COMMAND"] == "visio-rdv"
    assert _depends_on(services["migrate"]) == {"postgres": "service_healthy"}


def test_built_services_use_the_dockerfile_with_an_existing_service(services: Services) -> None:
    built = _built_services(services)
    assert set(APP_SERVICES) | {"graph-emulator", "migrate"} <= set(built)
    for name, svc in built.items():
        build = svc["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == DOCKERFILE_IN_COMPOSE
        service_arg = build["args"]["SERVICE"]
        top_level = service_arg in ("deploy", "fakes")
        folder = REPO / (service_arg if top_level else f"services/{service_arg}")
        assert (folder / "pyproject.toml").is_file(), f"{name}: no package folder {folder}"
    assert (REPO / DOCKERFILE_IN_COMPOSE).is_file()


def test_each_service_listens_on_its_port_and_is_probed_there(services: Services) -> None:
    for name, (prefix, port) in APP_SERVICES.items():
        env = services[name]["environment"]
        assert services[name]["build"]["args"]["SERVICE"] == name
        assert env[f"{prefix}HTTP_HOST"] == "0.0.0.0"
        assert int(env[f"{prefix}HTTP_PORT"]) == port
        assert env[f"{prefix}KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env[f"{prefix}KAFKA_ENABLE_IDEMPOTENCE"] == "true"
        assert env[f"{prefix}TOPIC_PREFIX"] == "visio-rdv"
        # Readiness: database and broker answer (liveness alone would call a cut-off service
        # healthy).
        assert env["HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/health/ready"
    assert "127.0.0.1:8080:8080" in services["booking"]["ports"]
    assert "127.0.0.1:8025:8025" in services["mailpit"]["ports"]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → volume name, for short-syntax named volumes."""
    return {spec.split(":")[1]: spec.split(":")[0] for spec in service.get("volumes", [])}


def test_meetings_trusts_the_ca_the_emulator_writes(services: Services) -> None:
    emulator = services["graph-emulator"]
    meetings = services["meetings"]
    ca_dir = emulator["environment"]["GRAPH_EMULATOR_CA_DIR"]
    ca_bundle = Path(meetings["environment"]["MEETINGS_CA_BUNDLE"])

    # The emulator writes into a named volume that meetings mounts where it reads the bundle.
    emulator_volume = _mounts(emulator)[ca_dir]
    assert _mounts(meetings)[str(ca_bundle.parent)] == emulator_volume
    assert emulator["environment"]["HEALTHCHECK_CA_FILE"] == str(ca_bundle)
    assert _depends_on(meetings)["graph-emulator"] == "service_healthy"

    # TLS to https://graph-emulator:8443 verifies only if that name is in the certificate.
    graph_host = urlsplit(meetings["environment"]["MEETINGS_GRAPH_BASE_URL"]).hostname
    authority_host = urlsplit(meetings["environment"]["MEETINGS_AUTHORITY"]).hostname
    extra_sans = json.loads(emulator["environment"]["GRAPH_EMULATOR_EXTRA_HOSTNAMES"])
    assert graph_host == authority_host == "graph-emulator"
    assert graph_host in extra_sans
    # The probe hits the discovery document of the same tenant msal will use.
    assert emulator["environment"]["HEALTHCHECK_URL"].startswith(
        meetings["environment"]["MEETINGS_AUTHORITY"] + "/"
    )


SETTINGS_CLASSES = {
    "BOOKING_": "visio_booking.settings:BookingSettings",
    "MEETINGS_": "visio_meetings.settings:MeetingsSettings",
    "NOTIFICATIONS_": "visio_notifications.settings:NotificationsSettings",
    "CONSENT_": "visio_consent.settings:ConsentSettings",
    "GRAPH_EMULATOR_": "visio_fakes.graph_emulator.settings:EmulatorSettings",
    "ALERTS_": "visio_alerts.settings:AlertsSettings",
}


def test_every_service_variable_is_a_setting_its_service_reads(services: Services) -> None:
    import importlib

    for prefix, target in SETTINGS_CLASSES.items():
        module, name = target.split(":")
        fields = set(getattr(importlib.import_module(module), name).model_fields)
        for service in services.values():
            for variable in service.get("environment", {}):
                if variable.startswith(prefix):
                    field = variable.removeprefix(prefix).lower()
                    assert field in fields, f"{variable} is not a setting of {target}"


def test_personal_data_on_the_broker_and_in_the_mail_sink_expires(services: Services) -> None:
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert 0 < int(kafka_env["KAFKA_LOG_RETENTION_HOURS"]) <= 24 * 30
    assert services["mailpit"]["environment"]["MP_MAX_AGE"]


# --- Self-service: the links in the emails and the pages behind them ---------------------------

# Who signs (notifications) and who reads (booking, consent) the emails' links.
LINK_KEY_HOLDERS = {"booking": "BOOKING_", "notifications": "NOTIFICATIONS_", "consent": "CONSENT_"}
_INTERPOLATED = re.compile(r"^\$\{(?P<variable>[A-Z][A-Z0-9_]*):-(?P<default>[^}]+)\}$")


def _interpolated(value: str) -> tuple[str, str]:
    """A `${VARIABLE:-default}` value: the variable, and what Compose uses when it is unset."""
    matched = _INTERPOLATED.match(value)
    assert matched, f"{value!r} is not ${{VARIABLE:-default}}"
    return matched["variable"], matched["default"]


def test_one_key_ring_signs_and_reads_the_self_service_links(services: Services) -> None:
    from visio_shared.links import LinkKeys

    rings = {
        services[name]["environment"][f"{prefix}LINK_KEYS"]
        for name, prefix in LINK_KEY_HOLDERS.items()
    }
    assert len(rings) == 1, "booking and consent must read with the ring notifications signs with"
    variable, default = _interpolated(rings.pop())
    assert variable == "VISIO_LINK_KEYS"
    # The default is in this file, hence public: it must say so to whoever reads it.
    assert all(b"DEV-ONLY" in entry.secret for entry in LinkKeys.parse(default).entries)
    assert not any("LINK_KEYS" in variable for variable in services["meetings"]["environment"])


def test_the_emails_link_to_pages_published_where_the_person_opens_them(
    services: Services,
) -> None:
    from visio_notifications.settings import NotificationsSettings

    notifications = services["notifications"]["environment"]
    urls = {}
    for service in ("booking", "consent"):
        variable, url = _interpolated(notifications[f"NOTIFICATIONS_{service.upper()}_PUBLIC_URL"])
        assert variable == f"VISIO_{service.upper()}_PUBLIC_URL"
        parts = urlsplit(url)
        container_port = APP_SERVICES[service][1]
        assert f"{parts.hostname}:{parts.port}:{container_port}" in services[service]["ports"]
        urls[service] = url
    # Consent sends an expired link to booking's « nouveau lien »: the same public address.
    fresh_link_base = services["consent"]["environment"]["CONSENT_BOOKING_PUBLIC_URL"]
    assert fresh_link_base == notifications["NOTIFICATIONS_BOOKING_PUBLIC_URL"]
    # And notifications accepts them as it would at start.
    NotificationsSettings(booking_public_url=urls["booking"], consent_public_url=urls["consent"])


# --- Operations: the alerts process and Prometheus ---------------------------------------------

PROMETHEUS_CONFIG = REPO / "deploy/prometheus/prometheus.yml"


def test_the_alerts_service_runs_its_own_image_against_the_stack(services: Services) -> None:
    alerts = services["alerts"]
    assert alerts["build"]["args"] == {"SERVICE": "alerts"}  # its script, visio-rdv-alerts
    assert "command" not in alerts
    env = alerts["environment"]
    assert env["ALERTS_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["ALERTS_TOPIC_PREFIX"] == "visio-rdv"
    # It migrates its own schema: the owner connection the migrate job uses.
    assert (
        env["ALERTS_OWNER_DATABASE_URL"] == services["migrate"]["environment"]["VISIO_DATABASE_URL"]
    )
    assert env["ALERTS_SMTP_HOST"] == "mailpit"
    assert env["HEALTHCHECK_URL"] == f"http://127.0.0.1:{env['ALERTS_HTTP_PORT']}/health/ready"
    assert _depends_on(alerts)["mailpit"] == "service_healthy"


def _scrape_targets() -> dict[str, list[str]]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    return {
        job["job_name"]: [
            target for static in job["static_configs"] for target in static["targets"]
        ]
        for job in config["scrape_configs"]
    }


def test_prometheus_scrapes_every_process_where_it_listens(services: Services) -> None:
    prometheus = services["prometheus"]
    mounted = {spec.split(":")[1]: spec.split(":")[0] for spec in prometheus["volumes"]}
    assert (REPO / mounted["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_CONFIG
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "127.0.0.1:9090:9090" in prometheus["ports"]

    scraped = _scrape_targets()
    processes = {**APP_SERVICES, "alerts": ("ALERTS_", 8084)}
    assert set(scraped) == {*processes, "lag-exporter"}
    # The lag exporter listens where the command says.
    assert services["lag-exporter"]["command"][-1] == "0.0.0.0:8085"
    assert scraped["lag-exporter"] == ["lag-exporter:8085"]
    for name, (prefix, port) in processes.items():
        # The target is the compose service by name, on the admin port the service really
        # binds (where /metrics is), which no `ports:` publishes.
        environment = services[name]["environment"]
        admin_port = int(environment[f"{prefix}ADMIN_PORT"])
        assert scraped[name] == [f"{name}:{admin_port}"]
        assert int(environment[f"{prefix}HTTP_PORT"]) == port
        assert environment[f"{prefix}HTTP_HOST"] == "0.0.0.0"
        assert environment[f"{prefix}ADMIN_HOST"] == "0.0.0.0"
        assert not any(str(admin_port) in spec for spec in services[name].get("ports", []))


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_is_parametrised_by_service(dockerfile_text: str) -> None:
    assert re.search(r"^ARG SERVICE\s*$", dockerfile_text, re.MULTILINE)
    assert 'uv sync --frozen --no-dev --no-editable --package "visio-${SERVICE}"' in dockerfile_text
    assert re.search(r"^USER (?!root)\S+", dockerfile_text, re.MULTILINE), "runs as non-root"
    assert re.search(r"^HEALTHCHECK ", dockerfile_text, re.MULTILINE)


def test_dockerfile_copies_every_workspace_members_pyproject(dockerfile_text: str) -> None:
    # uv reads all members to load the workspace; a member added later must be added there too.
    root = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    members = {
        path.parent.relative_to(REPO).as_posix()
        for pattern in root["tool"]["uv"]["workspace"]["members"]
        for path in REPO.glob(f"{pattern}/pyproject.toml")
    }
    assert members, "no workspace member found"
    copied = set(re.findall(r"^COPY (\S+)/pyproject\.toml ", dockerfile_text, re.MULTILINE))
    assert copied == members


def test_dockerignore_keeps_the_host_venv_out_of_the_image() -> None:
    # `COPY . /app` would otherwise overwrite the image's /app/.venv with the host's.
    patterns = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**/.venv" in patterns or ".venv" in patterns


# --- The HEALTHCHECK probe itself ---------------------------------------------------------------


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/live" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run_probe(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        env={"HEALTHCHECK_URL": url, "HEALTHCHECK_TIMEOUT": "5"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_probe_passes_on_a_live_service(health_server: str) -> None:
    result = _run_probe(f"{health_server}/health/live")
    assert result.returncode == 0, result.stderr


def test_probe_fails_on_an_error_status(health_server: str) -> None:
    result = _run_probe(f"{health_server}/health/other")
    assert result.returncode == 1
    assert "503" in result.stderr


def test_probe_fails_when_nothing_listens() -> None:
    # A port that just served and is now closed is the surest "nothing listens here".
    with http.server.HTTPServer(("127.0.0.1", 0), _HealthHandler) as probe_target:
        closed_port = probe_target.server_address[1]
    result = _run_probe(f"http://127.0.0.1:{closed_port}/health/live")
    assert result.returncode == 1
    assert "unreachable" in result.stderr


# --- What an operator uses: Kafka's data kept, reachable from the host, `ops` as a service ----

_EXACT_TAG = re.compile(r"^[^:@\s]+:v?\d+\.\d+\.\d+(?:[-.][A-Za-z0-9.-]+)?$")
# PostgreSQL numbers its releases major.minor since 10: 15.13 is one exact release.
_EXACT_POSTGRES = re.compile(r"^postgres:\d{2,}\.\d+(?:-[a-z]+)?$")


def _unpinned(images: list[str]) -> list[str]:
    """The images not pinned to an exact version (major.minor.patch): `latest`, no tag, or
    a moving tag such as `15` or `3.11-slim` get a different image on the next pull."""
    return [
        image for image in images if not (_EXACT_TAG.match(image) or _EXACT_POSTGRES.match(image))
    ]


def _dockerfile_images(text: str) -> list[str]:
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    images = [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], image)
        for image in re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    ]
    return images + re.findall(r"^COPY --from=(\S+:\S+) ", text, re.MULTILINE)


def test_every_image_is_pinned_to_an_exact_version(
    services: Services, dockerfile_text: str
) -> None:
    pulled = [svc["image"] for svc in services.values() if "image" in svc]
    assert len(pulled) >= 6
    assert _unpinned(pulled) == []
    built = _dockerfile_images(dockerfile_text)
    assert any(image.startswith("python:3.11.") for image in built), built
    assert _unpinned(built) == []


def test_the_pin_check_catches_moving_tags() -> None:
    moving = ["postgres:15", "python:3.11-slim", "grafana/grafana:latest", "busybox", "uv:0.13"]
    assert _unpinned(moving) == moving
    assert _unpinned(["prom/prometheus:v2.53.4", "python:3.11.13-slim-bookworm"]) == []


def _listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` → name → host:port."""
    return dict(entry.split("://", 1) for entry in value.split(","))


def test_kafka_keeps_its_data_on_a_named_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert not log_dirs.startswith("/tmp"), "lost with the container"
    volume = _mounts(kafka)[log_dirs]
    assert volume in compose["volumes"], "a named volume, declared at the top level"


def test_kafka_has_a_listener_for_the_host_on_the_loopback_only(services: Services) -> None:
    env = services["kafka"]["environment"]
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) == set(protocols)
    assert set(advertised) <= set(listeners) - {env["KAFKA_CONTROLLER_LISTENER_NAMES"]}
    # The containers' listener, where every service is told to connect.
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "kafka:9092"
    # The host's: advertised on 127.0.0.1, at the port published there (and only there).
    host_side = [
        address for name, address in advertised.items() if address.startswith("127.0.0.1:")
    ]
    assert len(host_side) == 1
    port = host_side[0].rpartition(":")[2]
    listened = {name for name, address in listeners.items() if address.endswith(f":{port}")}
    assert listened == {name for name, address in advertised.items() if address == host_side[0]}
    assert services["kafka"]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_ops_runs_visio_rdv_ops_against_the_stack(services: Services) -> None:
    from visio_deploy.cli import build_parser
    from visio_deploy.ops.settings import OpsSettings

    ops = services["ops"]
    assert ops["build"]["args"] == {"SERVICE": "deploy", "COMMAND": "visio-rdv"}
    assert ops["entrypoint"] == ["visio-rdv", "ops"]
    assert ops["profiles"] == ["ops"], "never started by `docker compose up`"
    assert ops["restart"] == "no" and ops["healthcheck"] == {"disable": True}
    # `docker compose run --rm ops <words>` runs `visio-rdv ops <words>`: real commands.
    parser = build_parser()
    for words in (["lag"], ["dlq", "list"], ["topics"]):
        parser.parse_args(["ops", *words])
    # Where the services are, as they are told it.
    env = ops["environment"]
    settings = OpsSettings.model_validate(
        {key.removeprefix("VISIO_").lower(): value for key, value in env.items()}
    )
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.topic_prefix == services["booking"]["environment"]["BOOKING_TOPIC_PREFIX"]
    assert env["VISIO_DATABASE_URL"] == services["migrate"]["environment"]["VISIO_DATABASE_URL"]
    assert _depends_on(ops) == {"kafka": "service_healthy", "postgres": "service_healthy"}


def test_the_healer_probes_the_dependencies_the_services_use(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visio_deploy.ops.settings import OpsSettings

    heal = services["heal"]
    assert heal["command"] == ["ops", "heal"]
    for variable, value in heal["environment"].items():  # read as the process reads them
        monkeypatch.setenv(variable, value)
    settings = OpsSettings()
    meetings = services["meetings"]["environment"]
    assert settings.heal_probes["graph"] == meetings["MEETINGS_GRAPH_BASE_URL"] + "/"
    notifications = services["notifications"]["environment"]
    smtp = f"smtp://{notifications['NOTIFICATIONS_SMTP_HOST']}:{notifications['NOTIFICATIONS_SMTP_PORT']}"
    assert settings.heal_probes["smtp"] == smtp
    assert str(settings.heal_ca_bundle) == meetings["MEETINGS_CA_BUNDLE"]
    assert _mounts(heal)[str(Path(meetings["MEETINGS_CA_BUNDLE"]).parent)] == "dev-ca"
