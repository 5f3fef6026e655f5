"""The whole local stack in production mode, with proper settings: `visio-rdv up --production`
as a person runs it — its own embedded PostgreSQL and tansu, every process with
VISIO_ENVIRONMENT=production, secrets generated under var/secrets, HTTPS public ports and SMTP
STARTTLS with the development CA, and the local broker waiver, said loudly — books one
appointment to `confirmed`, its email sent over STARTTLS with https:// links."""

from __future__ import annotations

import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from visio_fakes.processes import free_port

from .self_service_support import wait_for
from .test_end_to_end import booking_body

PROCESSES = ("booking", "meetings", "notifications", "consent", "alerts")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: Any) -> Any:
    checkout = tmp_path_factory.mktemp("checkout")
    var = checkout / "var"
    var.mkdir()
    ports = {name: free_port() for name in ("kafka", "graph", "smtp", "lag_exporter", *PROCESSES)}
    # Its own PostgreSQL (a fresh cluster: the roles are created with up's secrets) and its own
    # tansu (the waiver is for a loopback broker only).
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "VISIO_DATABASE_URL", "VISIO_KAFKA_BOOTSTRAP_SERVERS")
    }
    env |= {
        "VISIO_VAR_DIR": str(var),
        "VISIO_TOPIC_PREFIX": f"prod-{os.getpid()}",
        **{f"VISIO_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    log = var / "up.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "visio_deploy", "up", "--production"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=checkout,
        )
    try:
        wait_for(
            lambda: "ready —" in log.read_text() or process.poll() is not None,
            240,
            "visio-rdv up --production to print ready",
        )
        assert process.poll() is None, log.read_text()
        yield var, ports, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def test_the_production_stack_books_an_appointment_to_confirmed(stack: Any) -> None:
    var, ports, log = stack
    said = log.read_text()
    assert "PRODUCTION MODE: secrets in" in said
    assert "PRODUCTION CHECKS WAIVED FOR THE LOCAL BROKER" in said

    # Every process runs in production mode and logs each waived check at WARNING.
    for name in PROCESSES:
        process_log = (var / "log" / f"{name}.log").read_text()
        assert "PRODUCTION CHECK WAIVED" in process_log, name
        assert "refuses to start" not in process_log, name
        metrics = httpx.get(f"http://127.0.0.1:{ports[name] + 1000}/metrics", trust_env=False)
        waivers = [
            line for line in metrics.text.splitlines()
            if line.startswith("visio_production_waivers")
        ]  # fmt: skip
        assert waivers and float(waivers[0].split()[-1]) > 0, (name, waivers)

    # The secrets `up` owns: generated once, readable by their owner only.
    secrets = var / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name in ("link-master", "subject-key", "checkpoint-signing-key", "database-booking"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600, name

    # The public port speaks HTTPS only, with a certificate of the development CA.
    ca = ssl.create_default_context(cafile=var / "dev-ca" / "ca-bundle.pem")
    booking = f"https://127.0.0.1:{ports['booking']}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{ports['booking']}/health/live", trust_env=False, timeout=5)
    with pytest.raises(httpx.ConnectError):  # not trusted without the CA
        httpx.get(f"{booking}/health/live", trust_env=False, timeout=5)

    key = (var / "dev-api-key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=booking, headers=headers, verify=ca, trust_env=False) as client:
        answer = client.post("/v1/appointments", json=booking_body())
        assert answer.status_code == 202, answer.text
        assert answer.headers["strict-transport-security"]
        path = f"/v1/appointments/{answer.json()['appointment_id']}"
        started = time.monotonic()
        wait_for(lambda: client.get(path).json()["status"] == "confirmed", 90, "confirmed")
        print(f"\nconfirmed in {time.monotonic() - started:.2f}s after the booking's answer")

    # The sink takes mail only after STARTTLS: an email there went over TLS.
    sink_log = (var / "log" / "smtp-sink.log").read_text()
    assert "STARTTLS required" in sink_log
    emails = wait_for(lambda: list((var / "mail").glob("*.eml")), 30, "the confirmation email")
    text = emails[0].read_bytes().decode("utf-8", "replace")
    assert f"https://127.0.0.1:{ports['booking']}/" in text.replace("=\n", "")
    assert "http://127.0.0.1" not in text.replace("=\n", "")


def test_without_its_secrets_a_process_of_that_stack_refuses_to_start(stack: Any) -> None:
    """Break it on purpose: consent started with the stack's production environment but without
    the checkpoint key `up` gave it refuses, naming the setting."""
    var, _, _ = stack
    env = {
        **os.environ,
        "VISIO_ENVIRONMENT": "production",
        "VISIO_PRODUCTION_LOCAL_BROKER_WAIVER": "true",
        "CONSENT_SUBJECT_KEY": (var / "secrets" / "subject-key").read_text().strip(),
    }
    env.pop("CONSENT_CHECKPOINT_SIGNING_KEY", None)
    script = Path(sys.executable).parent / "visio-rdv-consent"
    refused = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "CONSENT_CHECKPOINT_SIGNING_KEY" in refused.stderr
