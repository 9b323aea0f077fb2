"""Apache Airflow provider for the Quamotion Cloud REST API.

Importing this package is cheap: it imports nothing from Airflow, msal or requests. The
provider manager finds :func:`get_provider_info` through the ``apache_airflow_provider`` entry point.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

CONN_TYPE = "quamotion"
HOOK_CLASS = "airflow_provider_quamotion.hooks.quamotion.QuamotionHook"


def _field(label: str, description: str, *, password: bool = False, default: Any = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if password:
        schema["format"] = "password"
    if default is not None:
        schema["default"] = default
    return {"label": label, "description": description, "schema": schema}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (validated against its schema)."""
    return {
        "package-name": "airflow-provider-quamotion",
        "name": "Quamotion Cloud",
        "description": "`Quamotion Cloud <https://cloud.quamotion.mobi>`__ mobile test automation: "
        "hook, operators, sensors, deferrable triggers and a local sandbox.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Quamotion Cloud",
                "external-doc-url": "https://docs.quamotion.mobi/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Quamotion Cloud",
                "python-modules": ["airflow_provider_quamotion.hooks.quamotion"],
            }
        ],
        "operators": [
            {
                "integration-name": "Quamotion Cloud",
                "python-modules": ["airflow_provider_quamotion.operators.quamotion"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Quamotion Cloud",
                "python-modules": ["airflow_provider_quamotion.sensors.quamotion"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Quamotion Cloud",
                "python-modules": ["airflow_provider_quamotion.triggers.quamotion"],
            }
        ],
        "extra-links": ["airflow_provider_quamotion.links.quamotion.QuamotionTestRunLink"],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Quamotion Cloud",
                "conn-fields": {
                    "tenant_id": _field(
                        "Tenant ID",
                        "Azure AD (Entra ID) tenant: a GUID or a domain such as contoso.onmicrosoft.com.",
                    ),
                    "project": _field(
                        "Project",
                        "Quamotion project name. Leave empty when the account sees exactly one project.",
                    ),
                    "api_key": _field(
                        "API key",
                        "Alternative to client credentials: a Quamotion API key (POST /api/login).",
                        password=True,
                    ),
                    "authority_host": _field(
                        "Authority host",
                        "Azure AD authority host (sovereign clouds, the sandbox).",
                        default="https://login.microsoftonline.com",
                    ),
                    "resource": _field(
                        "Resource",
                        "Token audience. Keep the trailing slash.",
                        default="https://cloud.quamotion.mobi/",
                    ),
                    "verify": _field(
                        "Verify TLS",
                        "true, false, or the path of a CA bundle. Governs every call, token requests too.",
                        default="true",
                    ),
                    "timeout": _field("Timeout (seconds)", "Connect and read timeout of every call."),
                    "proxies": _field(
                        "Proxies",
                        'JSON object such as {"https": "http://proxy:3128"}; applies to every call.',
                    ),
                    "scheduled_timezone": _field(
                        "Time zone of 'scheduled'",
                        "IANA zone (e.g. Europe/Brussels) of a test run's 'scheduled' written without an "
                        "offset; windowed exports follow it.",
                        default="UTC",
                    ),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "API base URL",
                        "login": "Client ID",
                        "password": "Client secret",
                    },
                    "placeholders": {
                        "host": "https://cloud.quamotion.mobi",
                        "login": "Azure AD application (client) ID",
                        "password": "Azure AD client secret",
                        "tenant_id": "contoso.onmicrosoft.com or a tenant GUID",
                        "project": "acme",
                        "authority_host": "https://login.microsoftonline.com",
                        "resource": "https://cloud.quamotion.mobi/",
                        "verify": "true",
                        "timeout": "60",
                        "extra": '{"proxies": {"https": "http://proxy:3128"}}',
                    },
                },
            }
        ],
    }
