"""What the sandbox keeps in its state dir: generated credentials and the connection document."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_provider_quamotion import CONN_TYPE
from airflow_provider_quamotion.api import DEFAULT_RESOURCE

CREDENTIALS_FILE = "credentials.json"
CONNECTION_FILE = "connection.json"
LOG_FILE = "sandbox.log"


def write_private(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Write a file atomically (temporary file + rename) with the given permissions.

    :param path: the file to write.
    :param data: its content.
    :param mode: its permission bits.
    """
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Credentials:
    """The sandbox's identities, generated once per state dir and kept in it.

    :param tenant_id: the Azure AD tenant GUID the token endpoint accepts.
    :param client_id: the application (client) id of the one registered client.
    :param client_secret: that client's secret.
    :param api_key: the key ``POST /api/login`` accepts.
    :param signing_key: the HS256 key that signs every issued token.
    """

    tenant_id: str
    client_id: str
    client_secret: str
    api_key: str
    signing_key: str

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Credentials:
        """Read the state dir's credentials, generating and saving them on first use.

        :param state_dir: the sandbox's state directory.
        """
        path = state_dir / CREDENTIALS_FILE
        if path.exists():
            return cls(**json.loads(path.read_text()))
        state_dir.mkdir(parents=True, exist_ok=True)
        creds = cls(
            tenant_id=str(uuid.uuid4()),
            client_id=str(uuid.uuid4()),
            client_secret="sbx~" + secrets.token_urlsafe(30),
            api_key="sbx-" + secrets.token_hex(20),
            signing_key=secrets.token_hex(32),
        )
        write_private(path, json.dumps(asdict(creds), indent=2))
        return creds


def origin(host: str, port: int) -> str:
    """``https://host:port``, with brackets around an IPv6 address.

    :param host: a host name or IP address.
    :param port: the TCP port.
    """
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def connection_document(
    creds: Credentials, *, api_url: str, authority_host: str, ca_path: Path
) -> dict[str, Any]:
    """The Airflow connection (``AIRFLOW_CONN_*`` JSON form) that points at a running sandbox.

    :param creds: the state dir's credentials.
    :param api_url: the API origin, e.g. ``https://127.0.0.1:8443``.
    :param authority_host: the Azure AD origin, e.g. ``https://localhost:8443``.
    :param ca_path: the CA certificate to verify both origins with.
    """
    return {
        "conn_type": CONN_TYPE,
        "host": api_url,
        "login": creds.client_id,
        "password": creds.client_secret,
        "extra": {
            "tenant_id": creds.tenant_id,
            "authority_host": authority_host,
            "resource": DEFAULT_RESOURCE,
            "verify": str(ca_path),
            "api_key": creds.api_key,
        },
    }
