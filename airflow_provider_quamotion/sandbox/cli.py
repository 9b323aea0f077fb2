"""The ``quamotion-sandbox`` command: ``serve`` a sandbox, or print a running one's ``connection``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from airflow_provider_quamotion.sandbox.data import DataSettings, parse_time
from airflow_provider_quamotion.sandbox.faults import FaultConfig, FaultRule
from airflow_provider_quamotion.sandbox.options import DEFAULT_TOKEN_LIFETIME, ServerOptions
from airflow_provider_quamotion.sandbox.state import CONNECTION_FILE

DEFAULT_STATE_DIR = ".state/sandbox"
ENV_VAR = "AIRFLOW_CONN_QUAMOTION_DEFAULT"


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="quamotion-sandbox", description="A local emulator of Quamotion Cloud and Azure AD, over TLS."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the sandbox until SIGINT/SIGTERM")
    serve.add_argument(
        "--state-dir",
        type=Path,
        default=Path(DEFAULT_STATE_DIR),
        help="certificates, credentials, connection.json",
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1, also [::1])")
    serve.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    data = serve.add_argument_group("generated data")
    data.add_argument("--runs", type=int, default=300, help="historical test runs (default 300)")
    data.add_argument("--seed", type=int, default=0, help="seed of the data and of random faults")
    data.add_argument("--days", type=float, default=30.0, help="days the runs spread over (default 30)")
    data.add_argument("--projects", type=int, default=1, help="projects the account sees (default 1)")
    data.add_argument(
        "--anchor", type=parse_time, default=None, help="end of the history: ISO time or epoch (default now)"
    )
    timing = serve.add_argument_group("created test runs")
    timing.add_argument("--queue-seconds", type=float, default=1.0, help="time a new run stays queued")
    timing.add_argument("--run-seconds", type=float, default=2.0, help="time a new run's jobs run")
    faults = serve.add_argument_group("faults (one rule; the admin API sets more)")
    faults.add_argument(
        "--fault-rate", type=float, default=None, help="probability of a fault (default: always)"
    )
    faults.add_argument(
        "--fault-status", default=None, help="comma list of statuses or 'drop', e.g. 429,503,drop"
    )
    faults.add_argument("--fault-path", default=None, help="regex of the paths faults apply to (default all)")
    faults.add_argument(
        "--retry-after", type=float, default=1, help="Retry-After seconds of 429/503 (default 1)"
    )
    faults.add_argument("--latency-ms", type=float, default=0, help="latency added to every request")
    faults.add_argument("--slow-body-ms", type=float, default=0, help="time over which bodies trickle out")
    faults.add_argument("--faults-json", default=None, help="a whole fault config as JSON, or @FILE")
    faults.add_argument(
        "--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME, help="token lifetime, seconds"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process exits")
    serve.add_argument("--quiet", action="store_true", help="print nothing when ready")

    conn = sub.add_parser("connection", help="print the connection JSON of a running sandbox")
    conn.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR))
    conn.add_argument("--export", action="store_true", help=f"print an 'export {ENV_VAR}=...' line")
    return parser


def fault_config(args: argparse.Namespace) -> FaultConfig | None:
    """The fault configuration the ``serve`` flags describe, if any.

    :param args: the parsed ``serve`` arguments.
    """
    if args.faults_json:
        text = (
            Path(args.faults_json[1:]).read_text() if args.faults_json.startswith("@") else args.faults_json
        )
        return FaultConfig.from_dict(json.loads(text))
    statuses: list[int | str] | None = None
    if args.fault_status:
        statuses = [s.strip() for s in args.fault_status.split(",") if s.strip()]
    elif args.fault_rate is not None:
        statuses = [429, 503]
    if statuses is None and not args.latency_ms and not args.slow_body_ms:
        return None
    rule = FaultRule(
        path=args.fault_path,
        status=statuses,  # type: ignore[arg-type]  # validated by FaultRule
        rate=args.fault_rate,
        retry_after=args.retry_after,
        latency_ms=args.latency_ms,
        slow_body_ms=args.slow_body_ms,
    )
    return FaultConfig([rule])


def serve(args: argparse.Namespace) -> int:
    """Run a sandbox until SIGINT/SIGTERM.

    :param args: the parsed ``serve`` arguments.
    """
    from airflow_provider_quamotion.sandbox.runtime import SandboxServer

    options = ServerOptions(
        data=DataSettings(
            seed=args.seed,
            runs=args.runs,
            days=args.days,
            anchor=float(int(time.time())) if args.anchor is None else args.anchor,
            projects=args.projects,
        ),
        queue_seconds=args.queue_seconds,
        run_seconds=args.run_seconds,
        token_lifetime=args.token_lifetime,
        faults=fault_config(args),
    )
    server = SandboxServer(
        args.state_dir,
        options,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        exit_with_parent=args.exit_with_parent,
    )

    def announce(s: SandboxServer) -> None:
        if args.quiet:
            return
        path = shlex.quote(str(s.connection_path))
        print(
            f"Quamotion sandbox ready (pid {os.getpid()}):\n"
            f"  API        {s.api_url}  (project {s.ctx.data.projects[0]['relativeUrl']})\n"
            f"  Azure AD   {s.authority_host}/{s.credentials.tenant_id}\n"
            f"  CA         {s.tls.ca_cert}\n"
            f"  connection {s.connection_path}\n\n"
            f'Use it from Airflow:\n  export {ENV_VAR}="$(cat {path})"\n\nStop with Ctrl-C.',
            flush=True,
        )

    server.run(on_ready=announce)
    if not args.quiet:
        print("Quamotion sandbox stopped.", flush=True)
    return 0


def connection(args: argparse.Namespace) -> int:
    """Print a running sandbox's connection JSON.

    :param args: the parsed ``connection`` arguments.
    """
    path = args.state_dir / CONNECTION_FILE
    if not path.exists():
        print(
            f"no running sandbox: {path} does not exist (start one with 'quamotion-sandbox serve')",
            file=sys.stderr,
        )
        return 1
    text = json.dumps(json.loads(path.read_text()))
    print(f"export {ENV_VAR}={shlex.quote(text)}" if args.export else text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``quamotion-sandbox``.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    try:
        return serve(args) if args.command == "serve" else connection(args)
    except (ValueError, OSError) as exc:
        print(f"quamotion-sandbox: error: {exc}", file=sys.stderr)
        return 2
