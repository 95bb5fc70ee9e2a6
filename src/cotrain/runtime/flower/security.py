"""TLS and SuperNode authentication for a Flower deployment, as the launcher passes them on.

* TLS: the SuperLink serves its Fleet, Control and Runtime APIs with ``certfile``/``keyfile`` (a
  certificate whose SAN names the address the nodes dial, e.g. ``IP:127.0.0.1``); SuperNodes and
  the ``flwr`` CLI verify it against ``ca_certfile``. Without TLS every process gets ``--insecure``.
* Node authentication (needs TLS): the SuperLink starts with ``--enable-supernode-auth`` and admits
  only SuperNodes whose public key was registered (``flwr supernode register``); node ``i`` signs
  its requests with ``node_keys[i]``, an EC private key in OpenSSH format whose public key lies
  beside it as ``<file>.pub`` (``ssh-keygen -t ecdsa -b 384 -N "" -f node-0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class SecurityFileError(ValueError):
    """A certificate or key file is missing; ``field`` names the setting (``"tls.certfile"``)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate, the SuperLink's certificate and its private key."""

    ca_certfile: Path
    certfile: Path
    keyfile: Path

    def superlink_args(self) -> list[str]:
        return ["--ssl-ca-certfile", str(self.ca_certfile), "--ssl-certfile", str(self.certfile),
                "--ssl-keyfile", str(self.keyfile)]


@dataclass(frozen=True)
class Security:
    """How the SuperLink and its SuperNodes talk: TLS files (None: ``--insecure``) and node keys
    (empty: any node may join)."""

    tls: TlsFiles | None = None
    node_keys: tuple[Path, ...] = ()

    @staticmethod
    def public_key(private_key: Path) -> Path:
        return Path(f"{private_key}.pub")

    def check(self, nodes: int | None = None) -> None:
        """Raise :class:`SecurityFileError` for a missing file, keys without TLS, or (``nodes``
        given) a key count other than the node count."""
        if self.tls is not None:
            for name in ("ca_certfile", "certfile", "keyfile"):
                path = Path(getattr(self.tls, name))
                if not path.is_file():
                    raise SecurityFileError(f"no such file: {path}", field=f"tls.{name}")
        if self.node_keys and self.tls is None:
            raise SecurityFileError("SuperNode authentication needs TLS; set the TLS files too", field="node_keys")
        for i, key in enumerate(self.node_keys):
            for path in (Path(key), self.public_key(Path(key))):
                if not path.is_file():
                    raise SecurityFileError(f"node {i}: no such file: {path}", field="node_keys")
        if nodes is not None and self.node_keys and len(self.node_keys) != nodes:
            raise SecurityFileError(f"{len(self.node_keys)} node keys for {nodes} nodes; give one per node",
                                    field="node_keys")

    def superlink_args(self) -> list[str]:
        if self.tls is None:
            return ["--insecure"]
        return self.tls.superlink_args() + (["--enable-supernode-auth"] if self.node_keys else [])

    def supernode_args(self, key: Path | None) -> list[str]:
        """Flags of a SuperNode that signs with ``key`` (None: an unauthenticated node)."""
        if self.tls is None:
            return ["--insecure"]
        args = ["--root-certificates", str(self.tls.ca_certfile)]
        return args + (["--auth-supernode-private-key", str(key)] if key is not None else [])

    def connection(self, address: str) -> dict[str, object]:
        """The ``flwr`` CLI's SuperLink connection entry."""
        if self.tls is None:
            return {"address": address, "insecure": True}
        return {"address": address, "root-certificates": str(Path(self.tls.ca_certfile).resolve())}
