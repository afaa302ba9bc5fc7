"""The ``cellgate`` command: run the gateway, the embedded demo, and check configurations."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

from cellgate.audit.cli import add_audit_commands
from cellgate.config import Config, ConfigError, build_router, config_warnings, load_config

__all__ = ["main"]

LOOPS = ("auto", "asyncio", "uvloop", "rloop")


def _add_server_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=default_port, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="granian worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="rloop",
        help="event loop each worker runs (default: %(default)s)",
    )
    parser.add_argument(
        "--runtime-threads",
        type=int,
        default=1,
        help="granian I/O threads per worker (default: %(default)s)",
    )
    parser.add_argument(
        "--backlog", type=int, default=2048, help="listen backlog (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="granian log level (default: %(default)s)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")


def _serve(config_path: Path, config: Config, args: argparse.Namespace) -> int:
    """Runs granian on ``config`` (read from ``config_path``, which each worker loads again),
    with the node's state prepared first (the revocation log, and the zone when it is on)."""
    for name in ("workers", "runtime_threads", "backlog"):
        if getattr(args, name) < 1:
            print(f"cellgate: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    from cellgate.state import node_state

    os.environ["CELLGATE_CONFIG"] = str(config_path.resolve())
    try:
        state = node_state(config, args.workers)
        state.__enter__()
    except (OSError, ValueError) as err:
        print(f"cellgate: state: {err}", file=sys.stderr)
        return 2
    try:
        _run_granian(args, config)
    finally:
        state.__exit__(None, None, None)
    return 0


def _run_granian(args: argparse.Namespace, config: Config) -> None:
    """Runs granian until it is stopped (each worker maps the zone named in the environment)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    drain_dir = tempfile.mkdtemp(prefix="cellgate-drain-")
    drain_file = Path(drain_dir, "draining")
    os.environ["CELLGATE_DRAIN_FILE"] = str(drain_file)
    server = Granian(
        target="cellgate.gateway:create_app",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        workers=args.workers,
        runtime_threads=args.runtime_threads,
        loop=Loops(args.loop),
        http=HTTPModes.http1,
        websockets=False,
        backlog=args.backlog,
        log_level=LogLevels(args.log_level),
        log_access=args.access_log,
        # On SIGTERM workers stop accepting and finish what is in flight, for at most this long.
        workers_kill_timeout=config.server.shutdown_grace_s,
        # A worker that dies is replaced; it takes over its audit chain.
        respawn_failed_workers=True,
        respawn_interval=0.5,
    )
    interrupt = server.signal_handler_interrupt

    def drain_then_interrupt(*args: object, **kwargs: object) -> None:
        # Before granian stops the workers: they see the file and refuse what arrives on
        # kept-alive connections (503 draining) while the requests in flight finish.
        drain_file.touch()
        interrupt(*args, **kwargs)

    server.signal_handler_interrupt = drain_then_interrupt
    try:
        server.serve()
    finally:
        shutil.rmtree(drain_dir, ignore_errors=True)


def _check(config_path: Path) -> tuple[int, str, list[str], Config | None]:
    """The exit code, the summary or the errors, the warnings and the configuration itself
    when it is valid."""
    try:
        config = load_config(config_path)
        router = build_router(config)
    except ConfigError as err:
        return 2, str(err), [], None
    tiers = len(config.tiers)
    summary = (
        f"{config_path}: ok: {len(config.cells)} cells, {tiers} tiers, "
        f"{router.profile_count} profiles, {len(config.jwt.keys)} JWT keys"
    )
    return 0, summary, config_warnings(config), config


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validates a configuration and its profiles: every error (exit 2) or a summary (exit 0),
    with a ``warning:`` line on stderr for each protection left off (no issuer, no audience)."""
    code, message, warnings, _ = _check(Path(args.config))
    _print_warnings(warnings)
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    """Runs the gateway on a configuration file under granian's RSGI interface; the
    configuration's warnings go to stderr before it starts."""
    code, message, warnings, config = _check(Path(args.config))
    if config is None:
        print(message, file=sys.stderr)
        return code
    _print_warnings(warnings)
    return _serve(Path(args.config), config, args)


def cmd_explain(args: argparse.Namespace) -> int:
    """Explains what the router would decide for one request, and why: the token, the profile,
    the rate limit, each risk factor, step-up, every cell and the first rule that excludes it,
    and the chosen cell. Nothing is counted. Exit 0 when the request would be routed, 1 when it
    would be refused, 2 for a bad configuration. With --from-audit, replays a recorded decision
    against the configuration instead."""
    from cellgate.explain import explain, render

    try:
        router = build_router(load_config(args.config))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.from_audit is not None:
        return _replay(router, args.from_audit, args.json)
    if args.token is None or args.path is None:
        print(
            "cellgate explain: --token and --path are required (or --from-audit)", file=sys.stderr
        )
        return 2
    headers = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            print(f"--header {header!r}: must be 'Name: value'", file=sys.stderr)
            return 2
        headers.append((name.strip().lower(), value.strip()))
    # As the server hands it over: the query split off and the path percent-decoded once.
    path = unquote(args.path.partition("?")[0], errors="replace")
    explanation = explain(
        router, args.method.upper(), path, args.token, args.client_ip, args.user_agent, headers
    )
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(explanation, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(explanation))
    return 0 if explanation["decision"]["ok"] else 1


def _replay(router: object, given: str, as_json: bool) -> int:
    """Replays one audit record against ``router``: exit 0 when today's configuration decides the
    same, 1 when it differs, 3 when the record cannot be replayed, 2 for a bad record."""
    import orjson

    text = given
    if given == "-":
        text = sys.stdin.readline()
    elif not given.lstrip().startswith("{"):
        try:
            text = Path(given).read_text(encoding="utf-8").strip().splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as err:
            print(f"--from-audit {given!r}: cannot read a record: {err}", file=sys.stderr)
            return 2
    try:
        replayed = orjson.loads(router.replay(text))
    except ValueError as err:
        print(f"--from-audit: {err}", file=sys.stderr)
        return 2
    if as_json:
        sys.stdout.write(orjson.dumps(replayed, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif not replayed["replayable"]:
        print(f"not replayable: {replayed['why']}")
    else:
        today = replayed["today"]
        verdict = "the same" if replayed["same"] else "differently"
        print(f"request {replayed['request_id']}: today's configuration decides {verdict}")
        print(f"  then:  {replayed['original']['outcome']} {replayed['original']['reason'] or ''}")
        stage = (
            ", none of the tier's eligible: a cell of the region" if today.get("fallback") else ""
        )
        outcome = f"{today['outcome']} {today.get('reason') or ''}"
        print(f"  today: {outcome} (cell {today.get('cell')}{stage})")
        for difference in replayed["differences"]:
            print(f"  differs: {difference}")
        for missing in replayed["incomplete"]:
            print(f"  not compared: {missing}")
    if not replayed["replayable"]:
        return 3
    return 0 if replayed["same"] else 1


def default_demo_dir() -> Path:
    """Where ``cellgate up`` keeps its demo by default: ``$XDG_STATE_HOME/cellgate/demo``
    (``~/.local/state/cellgate/demo`` without it)."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "cellgate" / "demo"


def cmd_up(args: argparse.Namespace) -> int:
    """Runs the embedded demo: the demo cells as processes on loopback (hnw-us-east-1 over mTLS),
    the demo customers and the gateway, and prints a ready-made token and curl line for each
    customer. The demo's configuration and its throwaway CA and certificates (made on the first
    start, reused on later ones) live in the demo directory, and nowhere else."""
    from cellgate.demo.launch import (
        DemoCells,
        add_demo_audit,
        add_demo_redis,
        demo_admin_token,
        demo_cells,
        demo_customers,
        demo_token,
        render_demo_config,
    )

    directory = Path(args.demo_dir)
    ports = {cell_id: args.cell_port_base + i for i, cell_id in enumerate(demo_cells())}
    cells = DemoCells(ports, directory)
    redis = None
    if args.redis:
        from cellgate.redis_server import RedisServer, RedisServerFailed, RedisServerMissing

        redis = RedisServer(directory / "redis")
        try:
            redis.start()
        except (RedisServerMissing, RedisServerFailed) as err:
            print(f"cellgate up: --redis: {err}", file=sys.stderr)
            return 2
        print(f"cellgate up: state shared through {redis.url} (a throwaway redis-server)")
    print(
        f"cellgate up: starting {len(ports)} demo cells on ports "
        f"{min(ports.values())}-{max(ports.values())}, demo directory {directory}"
    )
    cells.start()
    try:
        config_path = render_demo_config(directory, ports)
        if redis is not None:
            add_demo_redis(config_path, redis.url)
        trail = add_demo_audit(config_path)
        url = f"http://{args.host}:{args.port}"
        print(f"cellgate up: gateway on {url}, configuration {config_path}")
        print(f"cellgate up: audit trail (buffered) in {trail}; check and follow it with")
        print(f"cellgate audit verify {trail}")
        print(f"cellgate audit tail -f {trail}\n")
        for customer in demo_customers():
            token = demo_token(customer["customer_id"])
            flags = ",".join(customer["flags"]) or "-"
            print(
                f"# {customer['customer_id']}: {customer['tier']} / {customer['region']}"
                f" / flags {flags}"
            )
            print(f"curl -s {url}/api/accounts -H 'Authorization: Bearer {token}'\n")
        risky = demo_token("c-risky")
        print("# a HIGH-risk transfer needs step-up (403 step_up_required); see why:")
        print(
            f"curl -s -X POST {url}/api/transfers -H 'Authorization: Bearer {risky}'\n"
            f"cellgate explain --config {config_path} --method POST --path /api/transfers"
            f" --token {risky}\n"
        )
        print("# live cell state (admin token)")
        print(
            f"curl -s {url}/_cellgate/cells -H 'Authorization: Bearer {demo_admin_token()}'\n",
            flush=True,
        )
        return _serve(config_path, load_config(config_path), args)
    finally:
        cells.stop()
        if redis is not None:
            redis.stop()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cellgate`` command."""
    parser = argparse.ArgumentParser(
        prog="cellgate", description="A cell router for financial-services platforms."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run the embedded demo: demo cells, demo customers and the gateway",
        description=cmd_up.__doc__,
    )
    _add_server_options(up, default_port=8080)
    up.add_argument(
        "--cell-port-base",
        type=int,
        default=9101,
        help="first port of the demo cells (default: %(default)s)",
    )
    up.add_argument(
        "--demo-dir",
        default=str(default_demo_dir()),
        help="the demo's own directory: its configuration, customers and throwaway TLS"
        " certificates and its audit trail (default: %(default)s)",
    )
    up.add_argument(
        "--redis",
        action="store_true",
        help="share revocations, quotas and breaker openings through a throwaway redis-server"
        " started for the demo (Debian's redis-server package: bash"
        " scripts/install-test-deps.sh)",
    )
    up.set_defaults(func=cmd_up)

    serve = commands.add_parser(
        "serve", help="run the gateway on a configuration file", description=cmd_serve.__doc__
    )
    serve.add_argument("--config", required=True, help="the cellgate TOML configuration")
    _add_server_options(serve, default_port=8080)
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser(
        "check-config",
        help="validate a configuration and its profiles; exit 2 listing every error",
        description=cmd_check_config.__doc__,
    )
    check.add_argument("config", help="the cellgate TOML configuration")
    check.set_defaults(func=cmd_check_config)

    why = commands.add_parser(
        "explain",
        help="explain the decision for one request (rules, risk, every cell); counts nothing",
        description=cmd_explain.__doc__,
    )
    why.add_argument("--config", required=True, help="the cellgate TOML configuration")
    why.add_argument("--token", help="the bearer token (with or without 'Bearer ')")
    why.add_argument(
        "--path",
        help="the request target as sent, e.g. /api/transfers or /api/./x/../transfers",
    )
    why.add_argument(
        "--from-audit",
        metavar="RECORD",
        help="replay an audit record (its JSON line, a file holding it, or - for stdin) against"
        " the configuration: exit 0 when it decides the same today, 1 when not (the differences"
        " are listed), 3 when the record cannot be replayed (a token or path refusal)",
    )
    why.add_argument("--method", default="GET", help="the request method (default: %(default)s)")
    why.add_argument(
        "--client-ip", default="127.0.0.1", help="the client address (default: %(default)s)"
    )
    why.add_argument("--user-agent", help="the User-Agent header (default: none)")
    why.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="another request header (traceparent, X-Forwarded-For from a trusted proxy); repeat",
    )
    why.add_argument("--json", action="store_true", help="print the explanation as JSON")
    why.set_defaults(func=cmd_explain)

    add_audit_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the ``cellgate`` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
