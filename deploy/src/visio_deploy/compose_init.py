"""First start of the production compose file (deploy/compose/production.yml): the CA, every
TLS certificate and every secret, generated inside the deployment and never committed.

Run once by the one-shot `init` service (the deploy image, as root), before anything else:

    python -m visio_deploy.compose_init /run/visio

It writes one folder per consumer, each mounted (compose `subpath`) into that consumer alone,
owned by that consumer's uid, 0700 with files 0600 (the CA certificate 0644):

    ca/                  ca.key (stays here: only this job signs), ca.crt
    kafka-<n>/           the broker's PEM keystore (key + chain), ca.crt, the admin password
    kafka-init/          admin.properties (the admin principal's client config), every
                         principal's SCRAM password, ca.crt
    postgres/            server key and certificate, the owner's password
    mailpit/             server key and certificate (STARTTLS)
    <service>/           its Kafka password, its database password, its link keys (one
                         separate key per purpose it signs or verifies), its HTTPS key and
                         certificate, ca.crt; consent: subject and checkpoint keys; alerts
                         and migrate: the owner's connection URL

Files already there are kept (a second start changes nothing: links already emailed still
open, roles keep their passwords, clients keep trusting the CA). Written with `cryptography`,
which the deploy image already carries (msal's dependency): no other image to pin and trust.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from visio_shared.links import KeyPurpose

# The images' users: apache/kafka runs as appuser (1000), postgres as postgres (999),
# mailpit as root, the project's image as visio (10001, deploy/docker/Dockerfile).
KAFKA_UID = 1000
POSTGRES_UID = 999
VISIO_UID = 10001
ROOT_UID = 0

BROKERS = ("kafka-1", "kafka-2", "kafka-3")
# Each Kafka principal (its SASL username) is the process's name, as the ACLs say.
PROCESSES = ("booking", "meetings", "notifications", "consent", "alerts", "ops")
DATABASE_ROLES = ("booking", "meetings", "notifications", "consent", "alerts")
# Which link purposes each service holds: what it signs or verifies (docs/production.md).
LINK_PURPOSES: dict[str, tuple[KeyPurpose, ...]] = {
    "booking": tuple(KeyPurpose),
    "notifications": (KeyPurpose.MANAGE, KeyPurpose.RECORDING, KeyPurpose.CONSENTS),
    "consent": (KeyPurpose.RECORDING, KeyPurpose.CONSENTS),
}
LINK_KEY_ID = "k1"
# Where the project's containers mount their own folder.
MOUNT = "/run/visio/secrets"
VALIDITY = dt.timedelta(days=825)


def token() -> str:
    return secrets.token_urlsafe(32)


def key_b64url() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


class Folder:
    """One consumer's folder: created 0700, files 0600, all owned by the consumer's uid."""

    def __init__(self, root: Path, name: str, uid: int) -> None:
        self.path = root / name
        self.uid = uid
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._own(self.path)

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:  # in the init container; a test as a user keeps its own uid
            os.chown(path, self.uid, self.uid)

    def keep(self, name: str, make: Callable[[], str | bytes], mode: int = 0o600) -> bytes:
        """The file's content, generated first if it is missing."""
        path = self.path / name
        if not path.exists():
            content = make()
            data = content.encode() if isinstance(content, str) else content
            partial = path.with_name(f".{name}.partial")
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
            self._own(partial)
            partial.rename(path)
        return path.read_bytes()

    def copy(self, name: str, content: bytes, mode: int = 0o600) -> None:
        self.keep(name, lambda: content, mode)


class Authority:
    """The deployment's own CA: made at first start, then loaded."""

    def __init__(self, folder: Folder) -> None:
        key_pem = folder.keep("ca.key", lambda: _key_pem(ec.generate_private_key(ec.SECP256R1())))
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.key = key
        self.cert_pem = folder.keep("ca.crt", self._self_signed, 0o644)
        self.cert = x509.load_pem_x509_certificate(self.cert_pem)

    def _self_signed(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Visio RDV deployment CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY * 4)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, folder: Folder, hostname: str) -> tuple[bytes, bytes]:
        """A server (and client) certificate for `hostname`: tls.key (PKCS#8), tls.crt."""
        key_pem = folder.keep("tls.key", lambda: _key_pem(ec.generate_private_key(ec.SECP256R1())))
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)

        def certificate() -> bytes:
            now = dt.datetime.now(dt.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + VALIDITY)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
                .sign(self.key, hashes.SHA256())
            )
            return cert.public_bytes(serialization.Encoding.PEM)

        cert_pem = folder.keep("tls.crt", certificate, 0o644)
        folder.copy("ca.crt", self.cert_pem, 0o644)
        return key_pem, cert_pem


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8: what Kafka's PEM keystores, PostgreSQL, Mailpit and uvicorn all read.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def link_ring(purposes: Iterable[KeyPurpose], keys: dict[KeyPurpose, str]) -> str:
    """`k1.<purpose>:<key>,…`: the separate key of each purpose the service holds."""
    return ",".join(f"{LINK_KEY_ID}.{purpose.value}:{keys[purpose]}" for purpose in purposes)


def initialise(root: Path) -> None:
    ca = Authority(Folder(root, "ca", ROOT_UID))
    shared = Folder(root, "shared-secrets", ROOT_UID)  # the init job's own copy, never mounted

    kafka_passwords = {
        name: shared.keep(f"kafka-{name}", token).decode() for name in ("admin", *PROCESSES)
    }
    database_passwords = {
        name: shared.keep(f"database-{name}", token).decode() for name in ("owner", *DATABASE_ROLES)
    }
    link_keys = {
        purpose: shared.keep(f"link-{purpose.value}", key_b64url).decode() for purpose in KeyPurpose
    }
    cluster_id = shared.keep(
        "kafka-cluster-id", lambda: base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    )
    admin = kafka_passwords["admin"]
    # The owner's connection (migrate, alerts' own migration, ops): TLS verified with the CA,
    # as each of those containers mounts it.
    owner_url = (
        f"postgresql://visio:{database_passwords['owner']}@postgres:5432/visio"
        f"?sslmode=verify-full&sslrootcert={MOUNT}/ca.crt"
    )

    for broker in BROKERS:
        folder = Folder(root, broker, KAFKA_UID)
        key_pem, cert_pem = ca.issue(folder, broker)
        folder.copy("keystore.pem", key_pem + cert_pem + ca.cert_pem)
        folder.copy("cluster-id", cluster_id)
        # Read by the brokers' FileConfigProvider (`${file:…:admin.password}`) and at format.
        folder.copy("secrets.properties", f"admin.password={admin}\n".encode())
        folder.copy("admin-password", admin.encode())
        folder.copy(
            "admin.properties", _client_properties(admin, "/run/visio/kafka/ca.crt").encode()
        )

    kafka_init = Folder(root, "kafka-init", KAFKA_UID)
    kafka_init.copy("ca.crt", ca.cert_pem, 0o644)
    kafka_init.copy(
        "admin.properties", _client_properties(admin, "/run/visio/kafka-init/ca.crt").encode()
    )
    for name in PROCESSES:
        kafka_init.copy(f"password-{name}", kafka_passwords[name].encode())

    postgres = Folder(root, "postgres", POSTGRES_UID)
    ca.issue(postgres, "postgres")
    postgres.copy("owner-password", database_passwords["owner"].encode())

    ca.issue(Folder(root, "mailpit", ROOT_UID), "mailpit")

    _process_folders(root, ca, kafka_passwords, database_passwords, link_keys, owner_url)

    migrate = Folder(root, "migrate", VISIO_UID)
    migrate.copy("ca.crt", ca.cert_pem, 0o644)
    migrate.copy("owner-database-url", owner_url.encode())
    for role in DATABASE_ROLES:
        migrate.copy(f"database-{role}", database_passwords[role].encode())

    acls = Folder(root, "acls", VISIO_UID)  # the ACL script, written by `acls`, run by kafka-init
    acls.path.chmod(0o755)


def _process_folders(
    root: Path,
    ca: Authority,
    kafka_passwords: dict[str, str],
    database_passwords: dict[str, str],
    link_keys: dict[KeyPurpose, str],
    owner_url: str,
) -> None:
    """Each process's own folder: its CA, Kafka and database passwords, link keys, and the
    secrets only it holds."""
    for name in PROCESSES:
        folder = Folder(root, name, VISIO_UID)
        folder.copy("ca.crt", ca.cert_pem, 0o644)
        folder.copy("kafka-password", kafka_passwords[name].encode())
        if name in DATABASE_ROLES:
            ca.issue(folder, name)
            folder.copy("database-password", database_passwords[name].encode())
        if name in LINK_PURPOSES:
            folder.copy("link-keys", link_ring(LINK_PURPOSES[name], link_keys).encode())
        if name == "consent":
            folder.keep("subject-key", token)
            folder.keep("checkpoint-signing-key", lambda: base64.b64encode(os.urandom(32)).decode())
        if name == "meetings":
            # The application secret registered in Entra ID: the operator's, not generated.
            folder.keep("graph-client-secret", lambda: "")
        if name == "booking":
            # The advisors' sign-in: its app registration's secret is the operator's; the key
            # of booking's session cookies is generated here.
            folder.keep("advisor-sign-in-secret", lambda: "")
            folder.keep("advisor-session-key", token)
        if name in ("alerts", "ops"):
            folder.copy("owner-database-url", owner_url.encode())


def _client_properties(password: str, truststore: str) -> str:
    """The admin principal's client configuration, as Kafka's command-line tools read it."""
    return (
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={truststore}\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m visio_deploy.compose_init <directory>", file=sys.stderr)
        return 2
    initialise(Path(args[0]))
    print(f"compose init: CA, certificates and secrets in place under {args[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
