"""Configuration: ``quantumtrade.toml`` decoded into frozen structs, then environment overrides.

Every component's config struct lives beside its code; this module only composes them into
``AppConfig``, decodes the file strictly (unknown keys, wrong types and out-of-range values are
errors naming the file and the key), and applies environment variables on top:

* ``QT_SECTION__KEY`` (``QT_ADMIN__PORT=8081``, nested: ``QT_DATA__SYNTHETIC__SEED=3``);
* the seed's names: ``DATABASE_URL``, ``REDIS_URL``, ``MAX_WORKERS``, ``CACHE_DURATION`` (ms),
  ``UPDATE_INTERVAL`` (ms), ``CIRCUIT_BREAKER_THRESHOLD``.

Exchange credentials (``BINANCE_API_KEY``, ``BINANCE_SECRET_KEY``, and the same for coinbase,
kraken, kucoin, okx) are read into ``credentials.Secrets``, which never prints its values.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec

from quantumtrade.allocation.allocator import AllocationConfig
from quantumtrade.anomaly.model import AnomalyConfig
from quantumtrade.breaker import BreakerConfig
from quantumtrade.bus import BusConfig
from quantumtrade.credentials import Credentials as Credentials  # re-exported (older importers)
from quantumtrade.credentials import Secrets
from quantumtrade.data.ccxt_source import CcxtSourceConfig
from quantumtrade.data.market_state import peak_bytes
from quantumtrade.data.orchestrator import OrchestratorConfig
from quantumtrade.data.replay_source import (
    ReplayConfig,
    checked_candle_files,
    parse_timeframe,
    resolve_path,
)
from quantumtrade.data.synthetic import SyntheticConfig
from quantumtrade.errors import ConfigError
from quantumtrade.execution.bar_fill import BarFillConfig, FillModel
from quantumtrade.execution.ccxt_venue import CcxtVenueConfig
from quantumtrade.execution.paper import PaperVenueConfig
from quantumtrade.execution.reconcile import ReconcileConfig
from quantumtrade.execution.router import RouterConfig
from quantumtrade.redaction import redact_url
from quantumtrade.regime.model import RegimeConfig
from quantumtrade.risk.manager import RiskLimits
from quantumtrade.scoring.scanner import ScannerConfig
from quantumtrade.strategy import adapt
from quantumtrade.strategy.adapt import AdaptConfig
from quantumtrade.strategy.loader import StrategyConfig, load_strategy

Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class Mode(StrEnum):
    PAPER = "paper"
    LIVE = "live"
    REPLAY = "replay"


class SourceKind(StrEnum):
    SYNTHETIC = "synthetic"
    REPLAY = "replay"
    CCXT = "ccxt"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class SystemConfig(_Section, frozen=True, forbid_unknown_fields=True):
    mode: Mode = Mode.PAPER
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.AUTO
    shutdown_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0


class DataConfig(_Section, frozen=True, forbid_unknown_fields=True):
    source: SourceKind = SourceKind.SYNTHETIC
    symbols: Positive | list[str] = 20
    """A count (synthetic market: BTCUSDT, ETHUSDT, … then generated names) or a list."""
    capacity: Annotated[int, msgspec.Meta(ge=50, le=100_000)] = 1_000
    """Bars kept per symbol in MarketState."""
    synthetic: SyntheticConfig = SyntheticConfig()
    replay: ReplayConfig = ReplayConfig()
    ccxt: CcxtSourceConfig = CcxtSourceConfig()
    orchestrator: OrchestratorConfig = OrchestratorConfig()


class CacheConfig(_Section, frozen=True, forbid_unknown_fields=True):
    ttl_ms: Positive = 1_000
    """How long a cached order book or ticker stays fresh (seed name: CACHE_DURATION)."""
    max_entries: Positive = 100_000


class DatabaseConfig(_Section, frozen=True, forbid_unknown_fields=True):
    url: str = ""
    """PostgreSQL URL (postgresql://…); empty: the embedded SQLite log at ``sqlite_path``."""
    sqlite_path: str = "var/quantumtrade.sqlite"
    schema: Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "public"
    """PostgreSQL schema holding the event log (one per daemon or test run, if you like)."""
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1_000
    flush_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 200
    max_buffer: Annotated[int, msgspec.Meta(ge=1_000)] = 200_000
    """Events held in memory awaiting a flush; past this, publishers wait (nothing is dropped)."""
    spool_path: str = ""
    """Where batches go while the database is unreachable (written to it when it returns);
    empty: ``eventlog.spool`` beside ``sqlite_path``."""


class RedisConfig(_Section, frozen=True, forbid_unknown_fields=True):
    url: str = ""
    """Redis URL (redis://…) for the L2 cache; empty: L1 memory only."""
    key_prefix: str = "qt:"
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 250


class AdminConfig(_Section, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 8080
    token: str = ""
    """Bearer token that POST requests need; empty: POSTs are refused."""


class ExecutionConfig(_Section, frozen=True, forbid_unknown_fields=True):
    fill_model: FillModel = FillModel.BOOK
    """Paper mode: "book" fills at once against the order book (``paper``); "next_bar" holds
    each order for its symbol's next bar and fills it there (``bar_fill``), as a backtest does.
    Live mode trades on ``venues`` whatever this says."""
    paper: PaperVenueConfig = PaperVenueConfig()
    """The simulated venue paper mode trades on."""
    bar_fill: BarFillConfig = BarFillConfig()
    """Fills at the next bar: slippage, volume cap, fees (``backtest`` always uses these)."""
    router: RouterConfig = RouterConfig()
    venues: list[CcxtVenueConfig] = []
    """Exchanges live mode trades on (``[[execution.venues]]``), keys from the environment;
    ignored in paper mode."""
    reconcile: ReconcileConfig = ReconcileConfig()


class AppConfig(_Section, frozen=True, forbid_unknown_fields=True):
    system: SystemConfig = SystemConfig()
    data: DataConfig = DataConfig()
    cache: CacheConfig = CacheConfig()
    breaker: BreakerConfig = BreakerConfig()
    bus: BusConfig = BusConfig()
    scanner: ScannerConfig = ScannerConfig()
    strategy: StrategyConfig = StrategyConfig()
    allocation: AllocationConfig = AllocationConfig()
    adapt: AdaptConfig = AdaptConfig()
    regime: RegimeConfig = RegimeConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    risk: RiskLimits = RiskLimits()
    execution: ExecutionConfig = ExecutionConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    admin: AdminConfig = AdminConfig()


# The seed's environment names and the key each one sets.
SEED_ENV: dict[str, tuple[str, ...]] = {
    "DATABASE_URL": ("database", "url"),
    "REDIS_URL": ("redis", "url"),
    "MAX_WORKERS": ("data", "orchestrator", "max_workers"),
    "CACHE_DURATION": ("cache", "ttl_ms"),
    "UPDATE_INTERVAL": ("data", "orchestrator", "update_interval_ms"),
    "CIRCUIT_BREAKER_THRESHOLD": ("breaker", "failure_threshold"),
}
ENV_PREFIX = "QT_"


MAX_SYMBOLS = 10_000
"""More symbols than any exchange lists; [data] symbols above this is a typo, not a market."""
MAX_MARKET_STATE_BYTES = 8 * 2**30
"""MarketState above this (or above half the machine's memory) is refused at start."""
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
SQLITE_MAGIC = b"SQLite format 3\x00"


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_size(data: DataConfig) -> list[tuple[str, str]]:
    count = len(data.symbols) if isinstance(data.symbols, list) else data.symbols
    if count > MAX_SYMBOLS:
        return [("data.symbols", f"{count:,} symbols is more than {MAX_SYMBOLS:,}")]
    need = peak_bytes(count, data.capacity)
    memory = _physical_memory()
    limit = min(MAX_MARKET_STATE_BYTES, memory // 2) if memory else MAX_MARKET_STATE_BYTES
    if need > limit:
        return [
            (
                "data.symbols",
                f"{count:,} symbols x {data.capacity:,} bars (data.capacity) need about "
                f"{need / 2**30:.1f} GiB of market state, above the {limit / 2**30:.1f} GiB "
                "this machine allows",
            )
        ]
    return []


def _host_problem(host: str) -> str | None:
    """Why ``host`` cannot be bound (None: an IP literal or a host name). No DNS lookup: a
    name that does not resolve is found at start (exit 2 naming admin.host)."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(host):
        return None
    return f"{host!r} is neither an IP address nor a host name"


def open_admin_warning(cfg: AppConfig) -> str | None:
    """A warning when the admin API listens beyond this machine with no token (GETs open)."""
    host = cfg.admin.host
    if cfg.admin.token or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"admin.host = {host!r} is not loopback and admin.token is empty: GET endpoints "
        "(positions, orders, metrics) are open to the network (POSTs are refused); "
        "set QT_ADMIN__TOKEN or bind 127.0.0.1"
    )


def sqlite_path_problem(path: str | Path) -> str | None:
    """Why a SQLite event log cannot live at ``path`` (None: it can, or will be created)."""
    p = Path(path)
    if str(p) == ":memory:":
        return None
    if p.is_dir():
        return f"{p.absolute()} is a directory, not a SQLite file"
    if p.exists():
        if not os.access(p, os.R_OK | os.W_OK):
            return f"{p.absolute()} is not readable and writable by this user"
        try:
            with open(p, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            return f"{p.absolute()}: cannot read: {exc.strerror or exc}"
        if head and head != SQLITE_MAGIC[: len(head)]:
            return (
                f"{p.absolute()} is not a SQLite database (corrupt, or another file): "
                "move it aside to start a new log, or point sqlite_path at the right file"
            )
        return None
    parent = p.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {p.absolute()}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {p.absolute()}: {parent} is not writable by this user"
    return None


def check_startable(cfg: AppConfig, where: str) -> None:
    """What a start would find on this machine: the replay files and the SQLite log's path.

    Run by ``check-config`` and ``run`` (not by ``load_config``: ``backtest`` and ``replay``
    need neither); raises ``ConfigError`` naming the file and the key.
    """
    if cfg.data.source is SourceKind.REPLAY:
        try:
            checked_candle_files(resolve_path(cfg.data.replay.path))
        except (OSError, ValueError) as exc:
            raise ConfigError(where, "data.replay.path", str(exc)) from None
    if not cfg.database.url:
        problem = sqlite_path_problem(cfg.database.sqlite_path)
        if problem is not None:
            raise ConfigError(where, "database.sqlite_path", problem)


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _explain(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(dotted key, reason) from a msgspec validation error."""
    m = _AT.match(str(exc))
    reason = m.group("reason") if m else str(exc)
    path = (m.group("path") or "") if m else ""
    key = ".".join(p for p in re.split(r"[.\[\]]+", path) if p)
    unknown = _UNKNOWN.match(reason)
    if unknown:
        key = f"{key}.{unknown.group('field')}" if key else unknown.group("field")
        reason = "unknown key"
    else:
        reason = reason.replace("`", "")
    return key, reason


def _check_semantics(cfg: AppConfig) -> list[tuple[str, str]]:
    """Cross-field and range rules msgspec's per-field constraints cannot express."""
    problems: list[tuple[str, str]] = []
    if isinstance(cfg.data.symbols, list):
        if not cfg.data.symbols:
            problems.append(("data.symbols", "must not be empty"))
        bad = [s for s in cfg.data.symbols if not re.fullmatch(r"[A-Z0-9]{2,20}", s)]
        if bad:
            problems.append(("data.symbols", f"not symbol names like BTCUSDT: {bad[:3]}"))
    if cfg.data.symbols == 0:
        problems.append(("data.symbols", "must be at least 1"))
    problems.extend(_check_size(cfg.data))
    host_problem = _host_problem(cfg.admin.host)
    if host_problem is not None:
        problems.append(("admin.host", host_problem))
    orch = cfg.data.orchestrator
    if not 1 <= orch.max_workers <= 1024:
        problems.append(("data.orchestrator.max_workers", "must be between 1 and 1024"))
    if orch.update_interval_ms < 10:
        problems.append(("data.orchestrator.update_interval_ms", "must be at least 10 ms"))
    if cfg.breaker.failure_threshold < 1:
        problems.append(("breaker.failure_threshold", "must be at least 1"))
    if cfg.breaker.cooldown_ms < 0:
        problems.append(("breaker.cooldown_ms", "must not be negative"))
    if cfg.bus.queue_size < 1:
        problems.append(("bus.queue_size", "must be at least 1"))
    if cfg.bus.max_attempts < 1:
        problems.append(("bus.max_attempts", "must be at least 1"))
    if cfg.scanner.top_n < 1:
        problems.append(("scanner.top_n", "must be at least 1"))
    if cfg.scanner.ema_fast >= cfg.scanner.ema_slow:
        problems.append(("scanner.ema_fast", "must be shorter than scanner.ema_slow"))
    if cfg.anomaly.pause_entries and not cfg.anomaly.enabled:
        problems.append(("anomaly.pause_entries", "needs anomaly.enabled = true"))
    problems.extend(adapt.check(cfg.adapt, cfg.data.capacity))
    problems.extend(_check_allocation(cfg))
    if cfg.database.url and not re.match(r"^postgres(ql)?://", cfg.database.url):
        problems.append(("database.url", "must be a postgresql:// URL (or empty for SQLite)"))
    if cfg.redis.url and not re.match(r"^(rediss?|unix)://", cfg.redis.url):
        problems.append(("redis.url", "must be a redis://, rediss:// or unix:// URL"))
    if cfg.system.mode is Mode.REPLAY:
        problems.append(
            (
                "system.mode",
                "replay is a command, not a mode: run `quantumtrade replay`, or paper-trade "
                "recorded candles with mode = paper and data.source = replay",
            )
        )
    if cfg.data.source is SourceKind.REPLAY and not cfg.data.replay.path:
        problems.append(("data.replay.path", "required when data.source = 'replay'"))
    for key, timeframe in (
        ("data.replay.timeframe", cfg.data.replay.timeframe),
        ("data.ccxt.timeframe", cfg.data.ccxt.timeframe),
    ):
        if timeframe:
            try:
                parse_timeframe(timeframe)
            except ValueError as exc:
                problems.append((key, str(exc)))
    return problems


def _check_allocation(cfg: AppConfig) -> list[tuple[str, str]]:
    alloc = cfg.allocation
    problems: list[tuple[str, str]] = []
    if alloc.lookback > cfg.scanner.window - 1:
        problems.append(
            (
                "allocation.lookback",
                f"must be at most scanner.window - 1 ({cfg.scanner.window - 1})",
            )
        )
    if alloc.min_observations > alloc.lookback:
        problems.append(("allocation.min_observations", "must be at most allocation.lookback"))
    if alloc.hedge_symbol:
        if not cfg.strategy.allow_short:
            problems.append(
                ("allocation.hedge_symbol", "a hedge is a short: needs strategy.allow_short = true")
            )
        symbols = cfg.data.symbols
        if isinstance(symbols, list) and alloc.hedge_symbol not in symbols:
            problems.append(
                ("allocation.hedge_symbol", f"{alloc.hedge_symbol!r} is not in data.symbols")
            )
    return problems


def _check_live(cfg: AppConfig, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """Live mode needs at least one exchange venue, one per exchange, each with its keys."""
    problems: list[tuple[str, str]] = []
    venues = cfg.execution.venues
    names = [v.exchange for v in venues]
    if len(set(names)) != len(names):
        problems.append(("execution.venues", f"one venue per exchange, got {names}"))
    if cfg.system.mode is not Mode.LIVE:
        return problems
    if not venues:
        problems.append(
            (
                "execution.venues",
                "live mode needs at least one exchange: add [[execution.venues]] with "
                'exchange = "binance" (or coinbase, kraken, kucoin, okx), keys in the environment',
            )
        )
    secrets = Secrets.from_env(environ)
    for i, venue in enumerate(venues):
        creds = secrets.get(venue.exchange)
        prefix = venue.exchange.upper()
        for name, value in (
            (f"{prefix}_API_KEY", creds.api_key if creds else ""),
            (f"{prefix}_SECRET_KEY", creds.secret if creds else ""),
        ):
            if not value:
                problems.append(
                    (
                        f"execution.venues[{i}]",
                        f"{name} is not set in the environment (live trading on "
                        f"{venue.exchange} needs it)",
                    )
                )
    return problems


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _env_value(raw: str) -> Any:
    """Environment text as a TOML value when it parses as one (list, number, bool), else text."""
    text = raw.strip()
    if "," in text and not text.startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, tuple[str, ...], str]]:
    """(variable name, key path, raw value) for every override present, seed names first."""
    found = [(name, path, environ[name]) for name, path in SEED_ENV.items() if name in environ]
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and "__" in name:
            path = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split("__"))
            if all(path):
                found.append((name, path, raw))
    return found


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables, or a ``ConfigError`` naming the file and why it cannot be read."""
    where = str(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(where, "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(where, "", "is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(where, "", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(where, "", "not UTF-8 text") from None


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Read, validate and override the configuration; raise ConfigError naming file and key."""
    environ = os.environ if environ is None else environ
    where = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {} if path is None else read_toml(path)
    try:
        cfg = msgspec.convert(data, AppConfig)
    except msgspec.ValidationError as exc:
        key, reason = _explain(exc)
        raise ConfigError(where, key, reason) from None

    for name, key_path, raw in _env_overrides(environ):
        # The value as TOML would read it (numbers, booleans, lists), else as the raw text
        # (QT_ADMIN__TOKEN=12345 is text because the key is text), else as a list of one
        # (QT_DATA__SYMBOLS=BTCUSDT: one symbol, as "BTCUSDT,ETHUSDT" is two).
        error: msgspec.ValidationError | None = None
        for value in (_env_value(raw), raw, [raw.strip()]):
            tree = msgspec.to_builtins(cfg)
            _set_path(tree, key_path, value)
            try:
                cfg = msgspec.convert(tree, AppConfig, strict=False)
            except msgspec.ValidationError as exc:
                error = error or exc
                continue
            error = None
            break
        if error is not None:
            key, reason = _explain(error)
            raise ConfigError(f"environment variable {name}", key, reason) from None

    problems = _check_semantics(cfg) + _check_live(cfg, environ)
    if problems:
        key, reason = problems[0]
        raise ConfigError(where, key, reason)
    # The strategy loads now (its module, its parameters, exits and protections), so a bad
    # [strategy] stops the start with the key named, not the first decision.
    load_strategy(cfg.strategy, where)
    return cfg


def describe(cfg: AppConfig) -> dict[str, Any]:
    """The configuration as plain data, safe to log or show: URLs and the token redacted."""
    tree: dict[str, Any] = msgspec.to_builtins(cfg)
    tree["database"]["url"] = redact_url(cfg.database.url)
    tree["redis"]["url"] = redact_url(cfg.redis.url)
    tree["admin"]["token"] = "***" if cfg.admin.token else ""
    return tree
