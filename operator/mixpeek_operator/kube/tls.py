"""The TLS side of a connection: trust (CA data, CA file, the system store, or none) and the
client certificate, loaded from PEM in memory or on disk."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from mixpeek_operator.kube.config import KubeConnection
from mixpeek_operator.kube.errors import KubeConfigError


def _pem_text(data: str | bytes) -> str:
    # ssl treats bytes `cadata` as DER, so PEM always goes in as text.
    return data.decode("ascii") if isinstance(data, bytes) else data


def ssl_context(connection: KubeConnection) -> ssl.SSLContext:
    if connection.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif connection.ca_data is not None:
        context = ssl.create_default_context(cadata=_pem_text(connection.ca_data))
    elif connection.ca_path is not None:
        context = ssl.create_default_context(cafile=str(connection.ca_path))
    else:
        context = ssl.create_default_context()  # the system trust store
    if connection.has_client_certificate:
        _load_client_certificate(context, connection)
    return context


def _load_client_certificate(context: ssl.SSLContext, connection: KubeConnection) -> None:
    """ssl can only load a certificate chain from files: in-memory PEM goes to private temp files.

    The files live only for the `load_cert_chain` call (the context keeps what it loaded),
    so a key never outlives the moment it is needed on disk.
    """
    with tempfile.TemporaryDirectory(prefix="mixpeek-operator-tls-") as directory:  # mode 0700
        certificate = _materialize(connection.certificate_data, connection.certificate_path, directory, "crt")
        key = _materialize(connection.private_key_data, connection.private_key_path, directory, "key")
        try:
            context.load_cert_chain(certificate, key)
        except (OSError, ssl.SSLError) as exc:
            raise KubeConfigError(f"cannot load the client certificate: {exc}") from exc


def _materialize(data: str | bytes | None, path: Path | None, directory: str, suffix: str) -> str:
    if data is None:
        assert path is not None  # KubeConnection validates that one of them is set
        return str(path)
    target = os.path.join(directory, f"tls.{suffix}")
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data.encode("ascii") if isinstance(data, str) else data)
    return target
