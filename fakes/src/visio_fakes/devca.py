"""A development certificate authority, so local services speak real HTTPS.

The Graph emulator must be reached over TLS exactly like graph.microsoft.com: msal refuses
plain-HTTP authorities, and testing the real TLS path catches trust-store mistakes early.
`ensure_dev_ca` creates (once, then reuses) a CA and a server certificate for localhost,
plus a CA bundle holding the public roots *and* the dev CA, for clients such as msal's
requests session (which wants a path) and httpx (which wants an `ssl.SSLContext`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME = "Visio RDV dev CA"
SERVER_COMMON_NAME = "Visio RDV dev server"
DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

CA_LIFETIME = dt.timedelta(days=730)
SERVER_LIFETIME = dt.timedelta(days=365)
# Certificates closer than this to expiry are replaced, so a long-lived dev machine never
# starts a day with an expired certificate.
RENEW_BEFORE = dt.timedelta(days=30)
# Backdate validity a little: a client whose clock lags must not see "not yet valid".
BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class DevCA:
    """Paths of the dev CA material; every file exists once `ensure_dev_ca` returns."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    bundle_path: Path
    """Public roots (certifi, else the system CA file) followed by the dev CA certificate."""

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the public roots and the dev CA (what httpx wants)."""
        return ssl.create_default_context(cafile=str(self.bundle_path))


def ensure_dev_ca(directory: Path, *, extra_hostnames: Sequence[str] = ()) -> DevCA:
    """Create the dev CA and server certificate in `directory`, or reuse valid ones.

    The CA is kept as long as it is valid, so clients that already trust it keep working;
    the server certificate is reissued when missing, expiring, not issued by this CA or not
    covering `localhost`, `127.0.0.1`, `::1` and `extra_hostnames`. A file lock makes
    concurrent callers (the emulator and a test run, say) agree on one set of files.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = DevCA(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        bundle_path=directory / "ca-bundle.pem",
    )
    hostnames = tuple(dict.fromkeys((*DEFAULT_HOSTNAMES, *extra_hostnames)))
    now = dt.datetime.now(dt.UTC)
    with _locked(directory / ".lock"):
        ca_key, ca_cert = _load_valid_ca(ca, now) or _create_ca(ca, now)
        if not _server_cert_is_valid(ca, ca_cert, hostnames, now):
            _create_server_cert(ca, ca_key, ca_cert, hostnames, now)
        _write_bundle(ca, ca_cert)
    return ca


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_valid_ca(
    ca: DevCA, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    if not (ca.ca_cert.exists() and ca.ca_key.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key() != key.public_key() or cert.not_valid_after_utc - now < RENEW_BEFORE:
        return None
    return key, cert


def _create_ca(ca: DevCA, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Visio RDV (development only)"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(ca.ca_key, _key_pem(key))
    _write_atomic(ca.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _server_cert_is_valid(
    ca: DevCA, ca_cert: x509.Certificate, hostnames: Sequence[str], now: dt.datetime
) -> bool:
    if not (ca.server_cert.exists() and ca.server_key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(ca.server_cert.read_bytes())
        key = serialization.load_pem_private_key(ca.server_key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    covered = {*san.get_values_for_type(x509.DNSName)}
    covered |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    wanted = {str(_as_ip(h) or h) for h in hostnames}
    return (
        cert.public_key() == key.public_key()
        and cert.not_valid_after_utc - now >= RENEW_BEFORE
        and wanted <= covered
    )


def _create_server_cert(
    ca: DevCA,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hostnames: Sequence[str],
    now: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hostnames:
        ip = _as_ip(host)
        names.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(host))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_COMMON_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + SERVER_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(ca.server_key, _key_pem(key))
    _write_atomic(ca.server_cert, cert.public_bytes(serialization.Encoding.PEM))


def _public_roots_pem() -> bytes:
    """The public root store: certifi when installed, else the system CA file."""
    try:
        import certifi
    except ImportError:
        cafile = ssl.get_default_verify_paths().cafile
        if cafile and os.path.exists(cafile):
            return Path(cafile).read_bytes()
        return b""
    return Path(certifi.where()).read_bytes()


def _write_bundle(ca: DevCA, ca_cert: x509.Certificate) -> None:
    roots = _public_roots_pem()
    if roots and not roots.endswith(b"\n"):
        roots += b"\n"
    content = (
        roots + f"# {CA_COMMON_NAME}\n".encode() + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    if not ca.bundle_path.exists() or ca.bundle_path.read_bytes() != content:
        _write_atomic(ca.bundle_path, content)


def _as_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomic(path: Path, content: bytes, mode: int = 0o644) -> None:
    # Write then rename, so a reader never sees a half-written certificate.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(tmp, path)


def _write_private(path: Path, content: bytes) -> None:
    _write_atomic(path, content, mode=0o600)
