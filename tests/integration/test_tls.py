"""Optional TLS on the FIX listener: a client that trusts the gateway's CA logs on; one that
trusts another CA cannot connect."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.fixclient import get

pytestmark = pytest.mark.asyncio


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("dcgateway")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_files(tmp_path):
    folder = tmp_path / "gw"
    folder.mkdir()
    ca_key, ca = make_ca("dcgateway test CA")
    key, cert = make_server_cert(ca_key, ca)
    (folder / "server.pem").write_bytes(pem(cert))
    (folder / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (folder / "ca.pem").write_bytes(pem(ca))
    _, other_ca = make_ca("some other CA")
    (folder / "other-ca.pem").write_bytes(pem(other_ca))
    return folder


async def test_tls_listener_accepts_trusting_client_and_refuses_wrong_ca(start_gateway, tls_files):
    gw = await start_gateway(tls_files, extra="tls: {cert_file: server.pem, key_file: server.key}")
    good_ctx = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
    c = gw.client("ABC123N", ssl=good_ctx)
    assert get(await c.logon(), 35) == "A"
    await c.logout()
    await c.close()

    bad_ctx = ssl.create_default_context(cafile=str(tls_files / "other-ca.pem"))
    c = gw.client("ABC123N", ssl=bad_ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        await c.connect()
    await c.close()


def _get(url: str, ctx: ssl.SSLContext) -> int:
    import urllib.request
    with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
        return r.status


async def test_tls_on_the_metrics_endpoint(start_gateway, tls_files):
    import asyncio
    gw = await start_gateway(tls_files, extra="metrics_tls: {cert_file: server.pem, key_file: server.key}")
    port = gw.gw.metrics_port
    good_ctx = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
    assert await asyncio.to_thread(_get, f"https://127.0.0.1:{port}/healthz", good_ctx) == 200
    bad_ctx = ssl.create_default_context(cafile=str(tls_files / "other-ca.pem"))
    with pytest.raises(Exception) as err:
        await asyncio.to_thread(_get, f"https://127.0.0.1:{port}/metrics", bad_ctx)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
