"""``--endpoint ssl:…`` serves wss:// on the same code path; the Origin check knows it is https."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vibews.testing import Closed, connect, start_server


def _self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """A test certificate for localhost and 127.0.0.1, made here (no network, no openssl CLI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(pem)
    return key_path, cert_path, pem


@pytest_twisted.ensureDeferred
async def test_wss_with_certificate_verification(tmp_path: Path) -> None:
    """A client that verifies the server certificate connects over wss://, authenticates and gets
    acks; the page's own https origin is allowed, the http one is foreign."""
    key, cert, pem = _self_signed(tmp_path)
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    server = await start_server(tmp_path / "data", endpoint=endpoint)
    try:
        origin = {"Origin": f"https://localhost:{server.port}"}
        agent = await connect(
            server.port, server.agent_token, tls_ca=pem, host="localhost", headers=origin
        )
        assert (await agent.next_message())["type"] == "welcome"
        reply = await agent.request({"type": "agent_status", "id": "t", "payload": {"state": "s"}})
        assert reply["type"] == "ack"
        with pytest.raises(Closed):
            await connect(
                server.port,
                server.agent_token,
                tls_ca=pem,
                host="localhost",
                headers={"Origin": f"http://localhost:{server.port}"},
            )
    finally:
        await server.stop()
