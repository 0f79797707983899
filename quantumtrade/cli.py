"""``quantumtrade`` command line: run the daemon, warm its kernels up, check a config file.

Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or invalid configuration (one line on
stderr naming the file, the key and the reason; never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.metadata
import os
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

from quantumtrade.config import AppConfig, check_startable, load_config, open_admin_warning
from quantumtrade.errors import (
    ConfigError,
    EventLogMissing,
    SourceUnavailable,
    StoreUnavailable,
)

DEFAULT_PATHS = (Path("quantumtrade.toml"), Path("/etc/quantumtrade/quantumtrade.toml"))

log = structlog.get_logger("quantumtrade.cli")


def _config_path(given: str | None) -> Path | None:
    """The file to read: --config, else $QT_CONFIG, else ./quantumtrade.toml, else /etc/…"""
    if given:
        return Path(given)
    if os.environ.get("QT_CONFIG"):
        return Path(os.environ["QT_CONFIG"])
    return next((p for p in DEFAULT_PATHS if p.is_file()), None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantumtrade", description="QuantumTrade crypto trading daemon"
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {importlib.metadata.version('quantumtrade')}",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    run.add_argument("--config", metavar="PATH", help="TOML config (default: ./quantumtrade.toml)")
    sub.add_parser(
        "warmup",
        help="compile the numba kernels into numba's cache (NUMBA_CACHE_DIR) so that run "
        "starts in seconds",
    )
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", metavar="PATH", help="the TOML file to validate")
    migrate = sub.add_parser("migrate", help="apply the event log's schema migrations and exit")
    migrate.add_argument("--config", metavar="PATH", help="TOML config")
    migrate.add_argument(
        "--create", action="store_true", help="create the SQLite event log if it is not there"
    )
    replay = sub.add_parser(
        "replay", help="re-derive the logged session's signals and orders and show differences"
    )
    replay.add_argument("--config", metavar="PATH", help="TOML config (the session's own)")
    replay.add_argument(
        "--from",
        dest="start",
        type=_position,
        metavar="SEQ|TIME",
        help="compare from this seq or ISO-8601 UTC time",
    )
    replay.add_argument(
        "--to",
        dest="end",
        type=_position,
        metavar="SEQ|TIME",
        help="stop at this seq or ISO-8601 UTC time",
    )
    replay.add_argument("--limit", type=int, default=20, help="differences to print (default 20)")
    bt = sub.add_parser(
        "backtest",
        help="run the daemon's decision path over candle files; write summary, trades, report",
    )
    bt.add_argument(
        "--data", nargs="+", required=True, metavar="PATH",
        help="candle folders or files (relative to QT_DATA_DIR unless absolute)",
    )  # fmt: skip
    bt.add_argument("--symbols", type=_symbols, help="comma-separated (default: every file)")
    bt.add_argument("--timeframe", default="", help="resample to this timeframe (e.g. 4h)")
    bt.add_argument("--from", dest="start", type=_time, metavar="TIME", help="first traded bar")
    bt.add_argument("--to", dest="end", type=_time, metavar="TIME", help="end (exclusive)")
    bt.add_argument("--train", type=_span, metavar="FROM:TO", help="in-sample window (with --test)")
    bt.add_argument("--test", type=_span, metavar="FROM:TO", help="out-of-sample window")
    bt.add_argument("--config", metavar="PATH", help="TOML config (scanner, risk, bar_fill…)")
    bt.add_argument("--initial-equity", type=_positive_float, default=100_000.0, metavar="USDT")
    bt.add_argument(
        "--warmup", type=int, default=None, metavar="BARS",
        help="bars before the first traded one fed without trading (default: [data] capacity)",
    )  # fmt: skip
    bt.add_argument("--out", default="backtest-out", metavar="DIR", help="(default backtest-out)")
    bt.add_argument(
        "--compare", action="store_true",
        help="also score baselines: regime-blind, random entries, buy-and-hold (--test window)",
    )  # fmt: skip
    bt.add_argument(
        "--random-seeds", type=_positive, default=20, metavar="N",
        help="seeds the random baseline averages (default 20)",
    )  # fmt: skip
    opt = sub.add_parser(
        "optimize",
        help="search a strategy's parameters (optuna TPE); in-sample beside out-of-sample, PBO",
    )
    opt.add_argument("--strategy", required=True, metavar="NAME", help="built-in or module:Class")
    opt.add_argument(
        "--space", metavar="FILE.toml", help="search ranges (default: the strategy's SPACE)"
    )
    opt.add_argument(
        "--data", nargs="+", required=True, metavar="PATH",
        help="candle folders or files (relative to QT_DATA_DIR unless absolute)",
    )  # fmt: skip
    opt.add_argument("--symbols", type=_symbols, help="comma-separated (default: every file)")
    opt.add_argument("--timeframe", default="", help="resample to this timeframe (e.g. 4h)")
    opt.add_argument("--train", type=_span, metavar="FROM:TO", help="searched window (with --test)")
    opt.add_argument("--test", type=_span, metavar="FROM:TO", help="out-of-sample window")
    opt.add_argument(
        "--walk-forward", type=_positive, metavar="N",
        help="N rolling windows instead: the span in N+2 segments, train 2, test the next",
    )  # fmt: skip
    opt.add_argument("--trials", type=_positive, default=50, help="per window (default 50)")
    opt.add_argument(
        "--objective", choices=("sharpe", "sortino", "calmar", "profit_factor"), default="sharpe"
    )
    opt.add_argument(
        "--min-trades", type=int, default=10, metavar="N",
        help="a trial with fewer trades is pruned (default 10)",
    )  # fmt: skip
    opt.add_argument("--jobs", type=_positive, default=None, help="processes (default: CPUs)")
    opt.add_argument("--study", metavar="PATH", help="SQLite file to keep (and resume) trials in")
    opt.add_argument("--config", metavar="PATH", help="TOML config (scanner, risk, bar_fill…)")
    opt.add_argument(
        "--warmup", type=int, default=None, metavar="BARS",
        help="bars fed before each window without trading (default: [data] capacity)",
    )  # fmt: skip
    opt.add_argument("--out", default="optimize-out", metavar="DIR", help="(default optimize-out)")
    opt.add_argument("--seed", type=int, default=0, help="TPE seed (default 0)")
    regime = sub.add_parser("regime", help="market regime detection tools")
    regime_sub = regime.add_subparsers(dest="regime_command", required=True, metavar="COMMAND")
    ev = regime_sub.add_parser(
        "evaluate",
        help="score detection on labelled synthetic markets (accuracy, recall, switches)",
    )
    ev.add_argument("--seeds", default="4,5,6", type=_seeds, help="comma-separated (default 4,5,6)")
    ev.add_argument("--symbols", type=_positive, default=200)
    ev.add_argument("--bars", type=_positive, default=2000)
    ev.add_argument("--config", metavar="PATH", help="TOML config ([regime] section)")
    ev.add_argument(
        "--family",
        default="synthetic",
        metavar="NAME",
        help="labelled market family: synthetic, msgarch, channel, or all for a table "
        "(default synthetic)",
    )
    ev.add_argument(
        "--fit",
        choices=("shipped", "others"),
        default="shipped",
        help="shipped: the [regime] model as configured (fitted on synthetic seeds 1-3); "
        "others: refit it on seeds 1-3 of every other family (leave-one-family-out)",
    )
    detect = regime_sub.add_parser(
        "detect",
        help="label every bar of a candle CSV: timestamp,regime,confidence (rows that fail "
        "the daemon's validation are rejected and counted, not written)",
    )
    detect.add_argument("--input", required=True, metavar="FILE", help="CSV or CSV.gz candles")
    detect.add_argument("--output", required=True, metavar="FILE", help="where to write")
    detect.add_argument("--config", metavar="PATH", help="TOML config ([regime] section)")
    ev.add_argument(
        "--real", metavar="DIR",
        help="instead: how far apart the labels put, on every candle file under DIR, the "
        "property each claims (efficiency, volatility, breakout expansion) against the goals",
    )  # fmt: skip
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number")
    return value


def _symbols(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip().upper() for p in text.split(",") if p.strip())
    if not parts:
        raise argparse.ArgumentTypeError(f"'{text}' names no symbol")
    return parts


def _moment(text: str) -> datetime | None:
    """An ISO-8601 date or time as an aware datetime (UTC if no zone); None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _time(text: str) -> int:
    """An ISO-8601 date or time (UTC if no zone) as ms since the epoch."""
    moment = _moment(text)
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an ISO-8601 date or time (2024-03-01 or 2024-03-01T12:00:00Z)"
        )
    return int(moment.timestamp() * 1000)


def _span(text: str) -> tuple[int, int]:
    """``FROM:TO`` with dates (2024-01-01:2024-06-01), or ``FROM..TO`` with times."""
    start, sep, end = text.partition("..")
    if not sep:
        start, sep, end = text.partition(":")
        if not sep or ":" in end:
            raise argparse.ArgumentTypeError(
                f"'{text}' is not FROM:TO (2024-01-01:2024-06-01) or FROM..TO with times"
            )
    a, b = _time(start), _time(end)
    if a >= b:
        raise argparse.ArgumentTypeError(f"'{text}': FROM must be before TO")
    return a, b


def _seeds(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of seeds")
    return tuple(int(p) for p in parts)


def _position(text: str) -> tuple[str, int]:
    """``("seq", n)`` for a number, ``("ts", ns)`` for an ISO-8601 time (UTC if no zone)."""
    if text.isdigit():
        return "seq", int(text)
    moment = _moment(text)
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a seq number nor an ISO-8601 time (2025-01-01T12:00:00Z)"
        )
    return "ts", int(moment.timestamp() * 1e9)


def _fail(message: str, code: int = 2) -> int:
    print(f"quantumtrade: {message}", file=sys.stderr)
    return code


def cmd_check_config(path: str) -> int:
    try:
        cfg = load_config(path)
        check_startable(cfg, path)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    warning = open_admin_warning(cfg)
    if warning is not None:
        print(f"quantumtrade: WARNING: {warning}", file=sys.stderr)
    print(
        f"{path}: OK (mode={cfg.system.mode}, source={cfg.data.source}, "
        f"event log={'postgres' if cfg.database.url else 'sqlite'}, "
        f"admin={cfg.admin.host}:{cfg.admin.port})"
    )
    return 0


def cmd_warmup() -> int:
    """Compile (or load) every kernel ``run`` needs (``app.warm_up``), a line per group, and
    the total time."""
    import time

    import numba

    from quantumtrade.app import warm_up

    cache_dir: str = numba.config.CACHE_DIR  # type: ignore[attr-defined]
    where = cache_dir or "each module's __pycache__ (set NUMBA_CACHE_DIR to move it)"
    print(f"warmup: numba kernels into {where}", flush=True)
    t0 = time.perf_counter()
    began = [t0]

    def on_group(name: str, index: int, total: int) -> None:
        now = time.perf_counter()
        if index > 1:
            print(f" {now - began[0]:.1f} s", flush=True)
        began[0] = now
        print(f"warmup: [{index}/{total}] {name} ...", end="", flush=True)

    try:
        warm_up(on_group)
    except Exception as exc:  # a kernel that does not compile: say which, no traceback
        print(flush=True)
        return _fail(f"warmup failed: {type(exc).__name__}: {exc}", 1)
    now = time.perf_counter()
    print(f" {now - began[0]:.1f} s", flush=True)
    print(f"warmup: done in {now - t0:.1f} s", flush=True)
    return 0


def cmd_run(config: str | None) -> int:
    path = _config_path(config)
    where = str(path) if path is not None else "<defaults>"
    try:
        cfg = load_config(path)
        check_startable(cfg, where)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")

    from quantumtrade.logs import configure_logging

    configure_logging(cfg.system.log_level, cfg.system.log_format)
    warning = open_admin_warning(cfg)
    if warning is not None:
        log.warning("admin_api_open_without_token", host=cfg.admin.host, port=cfg.admin.port)
        print(f"quantumtrade: WARNING: {warning}", file=sys.stderr, flush=True)
    import uvloop

    try:
        uvloop.run(_serve(cfg))
    except (ConfigError, OSError, ExceptionGroup) as exc:
        return _start_failure(exc, cfg, where)
    from quantumtrade.app import warm_up_abandoned

    if warm_up_abandoned():
        # Stopped while numba was compiling: a thread cannot be stopped, and joining it (or
        # finalising the interpreter under it) would take up to a minute. Everything the
        # daemon opened is closed by now and nothing was written to the event log before
        # trading starts, so only output buffers are left to flush.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _start_failure(exc: BaseException, cfg: AppConfig, where: str) -> int:
    """Exit 2 for what only the operator can fix (named by key), 1 for runtime conditions."""
    config_error = _find(exc, ConfigError)
    if config_error is not None:
        return _fail(f"invalid configuration: {config_error}")
    for kind in (StoreUnavailable, SourceUnavailable):
        found = _find(exc, kind)
        if found is not None:
            return _fail(f"cannot start: {found}", 1)
    if _find(exc, socket.gaierror) is not None:
        reason = f"cannot resolve {cfg.admin.host!r} to an address to listen on"
        return _fail(f"invalid configuration: {ConfigError(where, 'admin.host', reason)}")
    oserror = _find(exc, OSError)
    if not isinstance(oserror, OSError):
        raise exc
    if oserror.errno == errno.EADDRINUSE:
        return _fail(
            f"cannot start: {oserror} (is [admin] port {cfg.admin.port} already in use? "
            "set QT_ADMIN__PORT)",
            1,
        )
    if oserror.errno == errno.EADDRNOTAVAIL:
        reason = f"{cfg.admin.host!r} is not an address of this machine ({oserror.strerror})"
        return _fail(f"invalid configuration: {ConfigError(where, 'admin.host', reason)}")
    if oserror.errno == errno.EACCES and cfg.admin.port < 1024:
        reason = f"port {cfg.admin.port} needs privileges this process lacks"
        return _fail(f"invalid configuration: {ConfigError(where, 'admin.port', reason)}")
    return _fail(f"cannot start: {oserror}", 1)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in ``exc``, looking inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, kind) else None


async def _serve(cfg: AppConfig) -> None:
    from quantumtrade import systemd

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []
    notifier = systemd.Notifier.from_env()
    # Until the daemon starts its components, a stop abandons start-up (cancels this task):
    # nothing has been written to the event log by then (see app.run_daemon).
    starting = asyncio.current_task()

    def on_signal(signum: int) -> None:
        nonlocal starting
        received.append(signum)
        if len(received) > 1:
            log.error("second_signal_exiting_now", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("stop_requested", signal=signal.Signals(signum).name)
        notifier.send("STOPPING=1", "STATUS=stopping")
        stop.set()
        if starting is not None:
            starting.cancel()
            starting = None

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    from quantumtrade.app import Daemon, StartPhase, StartupProgress, run_daemon
    from quantumtrade.clock import WallClock

    said_where: list[str] = []

    def on_progress(step: StartupProgress) -> None:
        nonlocal starting
        if step.phase is StartPhase.STARTING:
            starting = None  # from here a stop waits for the start, then stops in order
        if not said_where:
            said_where.append(step.admin_url)
            print(
                f"QuantumTrade starting ({cfg.system.mode} mode): GET {step.admin_url}/health "
                "answers 503 'starting' until trading starts",
                file=sys.stderr,
                flush=True,
            )
        what = f"{step.phase.replace('_', ' ')}: {step.detail}"
        print(f"QuantumTrade {what} [{step.elapsed_s:.1f} s]", file=sys.stderr, flush=True)
        notifier.send(f"STATUS={what}")

    def on_ready(daemon: Daemon) -> None:
        print(
            f"QuantumTrade running ({cfg.system.mode} mode, {len(daemon.state.symbols)} symbols, "
            f"event log: {daemon.eventlog.name}); admin API on {daemon.admin.url} "
            f"(GET /health, GET /metrics). Stop with Ctrl-C or SIGTERM.",
            file=sys.stderr,
            flush=True,
        )
        said = daemon.session.summary()
        if said:
            print(f"QuantumTrade: WARNING: {said}", file=sys.stderr, flush=True)
        if not stop.is_set():
            notifier.send("READY=1", f"STATUS=trading ({cfg.system.mode} mode)")

    search = None
    if cfg.adapt.enabled:
        import functools

        from quantumtrade.backtest.adapt import search_recent

        # The daemon imports nothing of backtest: its [adapt] search is handed in from here.
        search = functools.partial(search_recent, cfg)
    interval = systemd.watchdog_interval()
    try:
        async with asyncio.TaskGroup() as tg:
            pinger = None
            if notifier.enabled and interval > 0:
                pinger = tg.create_task(systemd.watchdog(notifier, interval), name="watchdog")
            try:
                await run_daemon(
                    cfg, clock=WallClock(), stop=stop, on_ready=on_ready,
                    on_progress=on_progress, search=search,
                )  # fmt: skip
            finally:
                if pinger is not None:
                    pinger.cancel()
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        # A stop during start-up: everything opened so far was closed on the way out.
        log.info("start_abandoned", signal=signal.Signals(received[0]).name)
    finally:
        notifier.close()


def cmd_migrate(config: str | None, *, create: bool = False) -> int:
    path = _config_path(config)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    from quantumtrade.store.factory import event_log_location, missing_event_log

    # A SQLite log that is not there is most likely the wrong directory or config: refuse,
    # unless asked to create it (PostgreSQL: migrate is how a new schema is set up).
    missing = missing_event_log(cfg.database)
    if missing is not None and not create:
        return _fail(f"{missing}; pass --create to create a new event log there")

    async def migrate() -> str:
        from quantumtrade.store.eventlog import SqliteEventLog
        from quantumtrade.store.postgres import PostgresEventLog

        where = event_log_location(cfg.database)
        if cfg.database.url:
            pg = PostgresEventLog(cfg.database.url, schema=cfg.database.schema)
            await pg.open()  # applies what is missing
            try:
                version, count = await pg.migrate(), await pg.count()
                return f"{where}: schema version {version}, {count} events"
            finally:
                await pg.close()
        sq = SqliteEventLog(cfg.database.sqlite_path)
        await sq.open()
        try:
            created = "created, " if missing is not None else ""
            return f"{where}: {created}schema up to date, {await sq.count()} events"
        finally:
            await sq.close()

    try:
        print(asyncio.run(migrate()))
    except StoreUnavailable as exc:
        return _fail(str(exc), 1)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(_config_path(args.config))
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    bounds: dict[str, int] = {}
    for name, pos in (("from", args.start), ("to", args.end)):
        if pos is not None:
            kind, value = pos
            bounds[f"{name}_{'seq' if kind == 'seq' else 'ts_ns'}"] = value

    async def run() -> int:
        from quantumtrade.replay import replay_log
        from quantumtrade.store.factory import event_log_location, open_existing_event_log

        where = event_log_location(cfg.database)
        eventlog = await open_existing_event_log(cfg.database)
        try:
            if await eventlog.count() == 0:
                raise EventLogMissing(f"the event log {where} holds no events")
            print(f"event log: {where}")
            report = await replay_log(eventlog, cfg, **bounds)
        finally:
            await eventlog.close()
        for i, s in enumerate(report.sessions, start=1):
            start = (
                f"{s.mode}, {s.source}, {s.symbols} symbols, {s.account} account "
                f"({s.restored_fills} fills restored)"
                if s.boundary == "marker"
                else f"{s.boundary}, {s.restored_fills} fills restored"
            )
            print(
                f"session {i}: seq {s.first_seq}-{s.last_seq} [{start}]: {s.events_read} events, "
                f"{s.scans} scans, logged {s.logged}, {s.differences} differences"
            )
        print(
            f"replayed {report.events_read} events ({report.market_events} market, "
            f"{report.fed_fills} fills) through {report.scans} scans in "
            f"{len(report.sessions)} sessions"
        )
        print(f"logged decisions:     {report.logged}")
        print(f"re-derived decisions: {report.replayed}")
        if not report.differences:
            print("no differences")
            return 0
        print(f"{len(report.differences)} differences:")
        for d in report.differences[: args.limit]:
            print(f"  {d.kind:8} {d.event_type} {d.key}: logged={d.logged} replayed={d.replayed}")
        return 1

    try:
        return asyncio.run(run())
    except EventLogMissing as exc:
        return _fail(str(exc))
    except StoreUnavailable as exc:
        return _fail(str(exc), 1)


def cmd_regime(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(_config_path(args.config))
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    from quantumtrade.regime.real import read_labelled, write_labels

    if args.regime_command == "detect":
        try:
            bars = read_labelled(args.input, cfg.regime)
        except FileNotFoundError as exc:
            return _fail(f"cannot read {exc.filename}: no such file", 1)
        except ValueError as exc:  # the message names the file
            return _fail(str(exc), 1)
        try:
            summary = write_labels(bars, args.output)
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror or exc}", 1)
        print(summary.line(args.output))
        return 0
    if args.real is not None:
        return _regime_real(args.real, cfg)
    return _regime_evaluate(args, cfg)


def _regime_real(root: str, cfg: AppConfig) -> int:
    """``regime evaluate --real DIR``: the label separations on real candles and the goals."""
    from quantumtrade.regime.real import format_report, measure

    try:
        report = measure(Path(root).expanduser(), cfg.regime)
    except (FileNotFoundError, ValueError) as exc:  # the message names the file or folder
        return _fail(str(exc), 1)
    for line in format_report(report):
        print(line)
    return 0


def _regime_evaluate(args: argparse.Namespace, cfg: AppConfig) -> int:
    """``regime evaluate``: one family's figures, or a table of every family's."""
    from quantumtrade.regime.evaluate import (
        FAMILIES,
        FITTED_ON,
        evaluate,
        family_table,
        held_out_config,
    )

    model = cfg.regime
    names = list(FAMILIES) if args.family == "all" else [args.family]
    if any(name not in FAMILIES for name in names):
        return _fail(f"unknown family {args.family!r} (known: {', '.join(FAMILIES)}, all)")
    reports = []
    for name in names:
        if args.fit == "others":
            config = held_out_config(name, (1, 2, 3), args.symbols, args.bars, model)
            fitted = "seeds 1-3 of " + ", ".join(n for n in FAMILIES if n != name)
        else:
            config = model
            fitted = f"the [regime] model (shipped: fitted on {FITTED_ON} seeds 1-3)"
        held_out = args.fit == "others" or name != FITTED_ON
        report = evaluate(args.seeds, args.symbols, args.bars, config, family=name)
        reports.append((report, held_out))
        print(
            f"family {name}: {'held out' if held_out else 'NOT held out (other seeds only)'}; "
            f"model: {fitted}",
            flush=True,
        )
    if len(reports) > 1:
        print("\n".join(family_table(reports)))
        return 0
    report = reports[0][0]
    print(
        f"seeds {list(report.seeds)}, {report.symbols} symbols x {report.bars} bars, "
        f"{report.scored_bars:,} bars scored"
    )
    print(f"accuracy          {report.accuracy:.4f}   (goal >= 0.95)")
    for name, value in report.recall.items():
        print(f"recall {name:<10} {value:.4f}   (goal >= 0.90)")
    print(f"switch precision  {report.switch_precision:.4f}   (goal >= 0.90)")
    print(f"switch recall     {report.switch_recall:.4f}   (goal >= 0.90)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "backtest":
        from quantumtrade.backtest.command import cmd_backtest

        return cmd_backtest(args, _config_path(args.config), argv)
    if args.command == "optimize":
        from quantumtrade.backtest.optimize import cmd_optimize

        return cmd_optimize(args, _config_path(args.config), argv)
    if args.command == "regime":
        return cmd_regime(args)
    if args.command == "replay":
        return cmd_replay(args)
    if args.command == "check-config":
        return cmd_check_config(args.path)
    if args.command == "warmup":
        return cmd_warmup()
    if args.command == "migrate":
        return cmd_migrate(args.config, create=args.create)
    return cmd_run(args.config)


if __name__ == "__main__":
    sys.exit(main())
