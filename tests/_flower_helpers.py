"""Helpers of the Flower tests: test certificates and node keys made with ``cryptography`` (a CA,
a SuperLink certificate for 127.0.0.1 with a SAN IP, EC node key pairs in OpenSSH format, what
``flower-supernode`` and ``flwr supernode register`` read), and the check that a run left no process."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import pytest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cotrain.runtime.flower.processes import run_processes, tagged_processes
from cotrain.runtime.flower.security import TlsFiles


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls(folder: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A CA and a server certificate for ``host`` (valid a day), as PEM files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("cotrain test CA")).issuer_name(_name("cotrain test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(ca_certfile=folder / "ca.crt", certfile=folder / "server.pem", keyfile=folder / "server.key")
    files.ca_certfile.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.keyfile.write_bytes(_pem_key(key))
    return files


def make_node_key(path: Path) -> Path:
    """An EC P-384 key pair: ``path`` (OpenSSH private key) and ``path.pub`` (OpenSSH public key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    Path(f"{path}.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                  serialization.PublicFormat.OpenSSH))
    return path


def children_of_this_process() -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == os.getpid() and stat[0] != "Z":
                kids.append(int(entry.name))
    return kids


def assert_nothing_left(workdir: Path | None = None) -> None:
    """No tagged process of this test process, no child of it, and (``workdir`` given) no member of
    that run's sessions (read from its ``logs/pids.json``)."""
    assert tagged_processes(f"{os.getpid()}-") == []
    assert children_of_this_process() == []
    if workdir is not None:
        assert (workdir / "logs" / "pids.json").exists()
        assert run_processes(workdir / "logs") == []


def _ray_import_error() -> str | None:
    try:
        import ray  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means no simulation engine here
        return f"ray cannot be imported ({err}); the simulation engine needs it"
    return None


needs_ray = pytest.mark.skipif(_ray_import_error() is not None, reason=_ray_import_error() or "")
"""Skip a test of the simulation engine where ray cannot be imported."""
