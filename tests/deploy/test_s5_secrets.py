"""Scenario 5 (after the others): no secret in any log file or in a dump of the metadata database.

Scanned for: the client secret and the API key of the ``quamotion_default`` connection, and every
token the sandbox's Azure AD issued (any JWT whose issuer is the sandbox's authority). The
connection itself is in the metadata database, encrypted with the Fernet key, as a team keeps it.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from airflow_provider_quamotion.sandbox import Sandbox
from tests.deploy.deployment import Deployment

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


def claims(token: str) -> dict[str, Any]:
    """A JWT's payload (not verified: only who issued it matters here)."""
    part = token.split(".")[1]
    try:
        return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))
    except ValueError:
        return {}


def leaks(text: str, sandbox: Sandbox) -> list[str]:
    """What of the sandbox's secrets appear in ``text`` (named, never quoted)."""
    named = (("client secret", sandbox.client_secret), ("API key", sandbox.api_key))
    found = [name for name, secret in named if secret in text]
    authority = sandbox.authority_host.rstrip("/")
    found += [
        "a token the sandbox issued"
        for t in JWT.findall(text)
        if str(claims(t).get("iss", "")).startswith(authority)
    ]
    return found


def test_no_secret_in_any_log_or_the_metadata_database(
    deployment: Deployment, deploy_sandbox: Sandbox
) -> None:
    assert deploy_sandbox.client_secret and deploy_sandbox.api_key
    assert deploy_sandbox.counters()["tokens_issued"] > 0  # the scenarios before spent tokens
    files = list(deployment.log_files())
    task_logs = [p for p in files if "dag_id=" in str(p)]
    assert len(task_logs) > 20, len(task_logs)  # the other scenarios' task logs are there
    found = {str(p): leaks(p.read_text(errors="replace"), deploy_sandbox) for p in files}
    assert {p: f for p, f in found.items() if f} == {}
    dump = deployment.pg_dump()
    assert "quamotion_default" in dump  # the connection is in there, encrypted
    assert leaks(dump, deploy_sandbox) == []
