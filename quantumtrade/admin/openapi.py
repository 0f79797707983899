"""The admin API's OpenAPI 3.0.3 document: each route's request and every answer it can give.

One entry per route in ``_paths`` (its operations, parameters, request body and answers) and
one component per shape used more than once. Answers are described as the handlers build them:
the fields always present are required, and objects stay open (``additionalProperties`` is not
false) so a field added to an answer does not break a client that validates against an older
document. Request bodies say what the server checks: the server ignores fields it does not read,
so they are open too. ``tests/integration/test_openapi.py`` checks that every route of the
aiohttp app is here with every method (and nothing else), that openapi-spec-validator accepts the
served document, and runs schemathesis against a paper daemon.
"""

from __future__ import annotations

from typing import Any

from quantumtrade.events import OrderType, Regime, Side, TradingState

Schema = dict[str, Any]

_STATES = [s.value for s in TradingState]
_REGIMES = [r.value for r in Regime]
SYMBOL_PATTERN = "^[A-Za-z0-9][A-Za-z0-9/._:-]{0,63}$"
"""What a symbol name looks like (the server trims and upper-cases a name, and answers 404 for
one it does not know)."""
SYMBOL_LIST_PATTERN = "^[A-Za-z0-9/._:-]+(,[A-Za-z0-9/._:-]+)*$"
NOT_BLANK = r"[^\s\x1c-\x1f]"
"""Something ``str.strip`` keeps: Python strips \\x1c-\\x1f too, regex \\s does not."""


# --- building blocks --------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    required: dict[str, Schema], optional: dict[str, Schema] | None = None, **more: Any
) -> Schema:
    """An object whose ``required`` fields are always present (``optional`` may be)."""
    schema: Schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:
        schema["required"] = list(required)
    return schema | more


def mapping(values: Schema, description: str = "") -> Schema:
    """An object keyed by names (symbols, venues, kinds) with values of one shape."""
    schema: Schema = {"type": "object", "additionalProperties": values}
    return schema | ({"description": description} if description else {})


def nullable(schema: Schema) -> Schema:
    """``schema`` or null (``schema`` must name its type: 3.0 ignores nullable by a $ref)."""
    if "type" not in schema:
        raise ValueError(f"nullable needs a schema with a type, not {schema}")
    return schema | {"nullable": True}


NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object"}
COUNT: Schema = {"type": "integer", "minimum": 0}
COUNTS: Schema = mapping(COUNT)


def json_answer(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    return json_answer(description, ref("Error"))


def json_body(schema: Schema, example: Any) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


# --- components -------------------------------------------------------------------------------


def _schemas() -> dict[str, Schema]:
    """The shapes answers share (request bodies, each used once, are inline in ``_paths``)."""
    # Inlined where they may be null: OpenAPI 3.0 ignores ``nullable`` beside a ``$ref``.
    bar = obj(
        {
            "ts_ms": INTEGER,
            "open": NUMBER,
            "high": NUMBER,
            "low": NUMBER,
            "close": NUMBER,
            "volume": NUMBER,
        }
    )
    ticker = obj(
        {"bid": NUMBER, "ask": NUMBER, "mid": NUMBER, "ts_ms": INTEGER},
        {"last": NUMBER},
        description="the last fetched ticker, else the top of a fresh cached book (no last)",
    )
    return {
        "Error": obj({"error": {"type": "string", "minLength": 1}}),
        "Health": obj(
            {
                "status": {
                    "type": "string",
                    "enum": ["ok", "degraded", "starting", "stopping", "stopped"],
                    "description": "ok: every component ok; else degraded, or the lifecycle",
                },
                "mode": STRING,
                "ticks": COUNT,
                "components": mapping(obj({"status": STRING}), "component name → its state"),
            }
        ),
        "Starting": obj(
            {
                "status": {"type": "string", "enum": ["starting"]},
                "phase": {"type": "string", "description": "the start-up step under way"},
                "detail": STRING,
                "mode": STRING,
                "starting_s": {"type": "number", "minimum": 0},
            },
            description="the start-up listener's answer, before the admin API takes the port",
        ),
        "Breaker": obj(
            {
                "state": {"type": "string", "enum": ["CLOSED", "OPEN", "HALF_OPEN"]},
                "consecutive_failures": COUNT,
                "total_failures": COUNT,
                "times_opened": COUNT,
            }
        ),
        "OrchestratorMetrics": obj(
            {
                "workers": COUNT,
                "workers_running": COUNT,
                "queue_depth": COUNT,
                "queue_size": COUNT,
                "symbols": COUNT,
                "active_symbols": COUNT,
                "regimes": COUNTS,
                "breakers": mapping(ref("Breaker"), "source → its breaker"),
                "fetches": COUNT,
                "source_calls": COUNT,
                "bars_stored": COUNT,
                "failures": COUNT,
                "timeouts": COUNT,
                "skipped_open": COUNT,
                "crashes": COUNT,
                "deferred": COUNT,
                "cache_served": COUNT,
                "stale_served": COUNT,
                "rejects": COUNTS,
                "stale": {"type": "array", "items": STRING},
                "mean_processing_ms": NUMBER,
                "last_processing_ms": NUMBER,
                "cache": mapping(ANY_OBJECT, "books and bars: L1 and L2 counters, hit rates"),
            }
        ),
        "MarketData": obj(
            {
                "symbols": mapping(
                    obj(
                        {
                            "bar": nullable(bar),
                            "bars": COUNT,
                            "ticker": nullable(ticker),
                            "stale": BOOLEAN,
                        }
                    ),
                    "symbol → its latest bar, ticker and stale flag",
                )
            }
        ),
        "FlowChanged": obj(
            {
                "action": {"type": "string", "enum": ["start-flow", "stop-flow"]},
                "symbols": {
                    "type": "array",
                    "items": STRING,
                    "description": "the symbols whose flow changed",
                },
            }
        ),
        "MarketRegime": obj(
            {
                "regime": nullable({"type": "string", "enum": _REGIMES}),
                "confidence": NUMBER,
                "since_ns": nullable(INTEGER),
                "symbols": COUNTS,
                "unlabelled": COUNT,
            }
        ),
        "SymbolRegime": obj(
            {
                "regime": {"type": "string", "enum": _REGIMES},
                "confidence": NUMBER,
                "since_ns": INTEGER,
            }
        ),
        "RouterMetrics": obj(
            {
                "routed": COUNT,
                "split": COUNT,
                "in_flight": COUNT,
                "unroutable": COUNT,
                "venues": mapping(
                    obj({"orders": COUNT, "fills": COUNT, "rejects": COUNT, "errors": COUNT}),
                    "venue → orders, fills, latency, slippage, fees, breaker",
                ),
            }
        ),
        "Reconciliation": obj(
            {
                "runs": COUNT,
                "last_run_ns": nullable(INTEGER),
                "interval_s": NUMBER,
                "resolved": COUNT,
                "open_orders": {"type": "array", "items": ANY_OBJECT},
                "unreconcilable": {"type": "array", "items": {}},
                "external_orders": {"type": "array", "items": ANY_OBJECT},
                "balances": ANY_OBJECT,
                "errors": ANY_OBJECT,
                "venues": {"type": "array", "items": STRING},
            }
        ),
        "VenueQuote": obj(
            {
                "venue": STRING,
                "mid": NUMBER,
                "expected_price": NUMBER,
                "fillable_quantity": NUMBER,
                "fee_bps": NUMBER,
                "slippage_bps": NUMBER,
                "latency_penalty_bps": NUMBER,
                "slippage_correction_bps": NUMBER,
                "reliability_penalty_bps": NUMBER,
                "total_bps": NUMBER,
                "complete": BOOLEAN,
                "quantity": NUMBER,
                "balance_limited": BOOLEAN,
            }
        ),
        "ChildOrder": obj(
            {
                "venue": STRING,
                "client_order_id": STRING,
                "quantity": NUMBER,
                "expected_price": NUMBER,
            }
        ),
        "RoutingDecision": obj(
            {
                "client_order_id": STRING,
                "symbol": STRING,
                "side": {"type": "string", "enum": [s.value for s in Side]},
                "quantity": NUMBER,
                "ranking": {"type": "array", "items": ref("VenueQuote")},
                "excluded": mapping(STRING, "venue left out → why"),
                "children": {"type": "array", "items": ref("ChildOrder")},
                "split_saving_bps": NUMBER,
                "limited": mapping(STRING, "venue whose balance pays for part → the shortfall"),
            }
        ),
        "OrderOutcome": obj(
            {
                "client_order_id": STRING,
                "status": {"type": "string", "enum": ["FILLED", "CANCELLED", "REJECTED"]},
                "venue": nullable(STRING),
                "filled_quantity": NUMBER,
                "avg_price": NUMBER,
                "fees": NUMBER,
                "reason": STRING,
                "fills": {"type": "array", "items": ANY_OBJECT},
                "children": {"type": "array", "items": STRING},
            }
        ),
        "OrderRouted": obj(
            {"routing": ref("RoutingDecision"), "order": ref("OrderOutcome")},
        ),
        "OrderInFlight": obj(
            {
                "routing": ref("RoutingDecision"),
                "order": obj(
                    {
                        "client_order_id": STRING,
                        "status": {"type": "string", "enum": ["IN_FLIGHT"]},
                    }
                ),
            }
        ),
        "OrderRefused": {
            "allOf": [
                ref("Error"),
                obj(
                    {
                        "routing": ref("RoutingDecision"),
                        "order": obj(
                            {
                                "client_order_id": STRING,
                                "status": {"type": "string", "enum": ["REJECTED"]},
                                "reason": STRING,
                            }
                        ),
                    }
                ),
            ]
        },
        "Anomaly": obj(
            {"kind": STRING, "score": NUMBER, "since_ms": INTEGER},
        ),
        "Anomalies": obj(
            {
                "enabled": BOOLEAN,
                "pause_entries": BOOLEAN,
                "symbols": mapping(
                    {"type": "array", "items": ref("Anomaly")}, "symbol → its active anomalies"
                ),
                "active": COUNT,
            },
            {"detected": mapping(COUNT, "kind → anomalies detected (when enabled)")},
        ),
        "Strategy": obj(
            {"strategy": STRING, "params": ANY_OBJECT},
            {
                "exits": ANY_OBJECT,
                "protections": ANY_OBJECT,
                "parameter_changes": COUNT,
                "adapt": obj({"enabled": BOOLEAN}),
            },
        ),
        "Position": obj(
            {
                "quantity": NUMBER,
                "avg_price": NUMBER,
                "mark_price": nullable(NUMBER),
                "unrealized_pnl": NUMBER,
                "realized_pnl": NUMBER,
                "fees": NUMBER,
            }
        ),
        "Positions": obj(
            {
                "positions": mapping(ref("Position"), "symbol → its position"),
                "totals": obj(
                    {"realized": NUMBER, "unrealized": NUMBER, "fees": NUMBER, "net": NUMBER}
                ),
                "attribution": obj(
                    {
                        f"by_{dimension}": mapping(
                            obj(
                                {
                                    "realized_after_fees": NUMBER,
                                    "unrealized": NUMBER,
                                    "net": NUMBER,
                                }
                            ),
                            f"{dimension} → its PnL (each breakdown's net sums to totals.net)",
                        )
                        for dimension in ("strategy", "symbol", "regime", "cluster")
                    }
                ),
            }
        ),
        "Risk": obj(
            {
                "state": {"type": "string", "enum": _STATES},
                "state_reason": STRING,
                "intents": COUNT,
                "checks_passed": COUNT,
                "rejects": COUNTS,
                "in_flight": ANY_OBJECT,
                "orders_last_minute": COUNT,
                "limits": ANY_OBJECT,
                "equity": NUMBER,
                "equity_peak": NUMBER,
                "drawdown": NUMBER,
                "error_rate": NUMBER,
                "kill_switch_trips": COUNTS,
                "anomaly_pause": obj(
                    {"enabled": BOOLEAN, "symbols": {"type": "array", "items": STRING}}
                ),
                "var": obj(
                    {"observations": COUNT, "gross_exposure": NUMBER},
                    {
                        name: mapping(nullable(NUMBER), "confidence → value (null: no history)")
                        for name in ("historical", "expected_shortfall", "parametric")
                    },
                ),
            },
            {"var_1d": ANY_OBJECT},
        ),
        "StateChanged": obj(
            {
                "state": {"type": "string", "enum": _STATES},
                "changed": {"type": "boolean", "description": "false: already in that state"},
            }
        ),
        "DeadLetter": obj(
            {
                "id": {"type": "integer", "description": "stable: assigned when dead-lettered"},
                "event_type": STRING,
                "event": ANY_OBJECT | {"description": "the event as the event log encodes it"},
                "handler": STRING | {"description": "the one handler that failed on it"},
                "error": STRING | {"description": "the last attempt's error"},
                "attempts": COUNT | {"description": "deliveries and retries tried so far"},
                "ts_ns": INTEGER | {"description": "when it was dead-lettered (daemon clock)"},
                "time": STRING | {"description": "ts_ns as UTC ISO 8601"},
            }
        ),
        "DeadLetters": obj(
            {"dead_letters": {"type": "array", "items": ref("DeadLetter")}, "count": COUNT},
            description="oldest first",
        ),
        "RetryResult": obj(
            {
                "id": INTEGER,
                "outcome": {"type": "string", "enum": ["ok", "failed"]},
                "attempts": COUNT,
                "error": nullable(STRING),
            }
        ),
        "Retried": obj(
            {
                "results": {"type": "array", "items": ref("RetryResult")},
                "ok": COUNT,
                "failed": COUNT,
                "remaining": COUNT,
            }
        ),
    }


# --- request bodies (inline, so a client or a fuzzer reads each where it is used) -----------


def symbols_schema(max_symbols: int) -> Schema:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": max_symbols,
        "items": {"type": "string", "pattern": SYMBOL_PATTERN},
        "description": "symbol names (also accepted: one comma-separated string)",
        "example": ["BTCUSDT", "ETHUSDT"],
    }


def order_request_schema(*, max_quantity: float, max_price: float) -> Schema:
    positive = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    return obj(
        {
            "symbol": {"type": "string", "pattern": SYMBOL_PATTERN},
            "side": {"type": "string", "enum": [s.value for s in Side]},
            "quantity": positive | {"maximum": max_quantity},
        },
        {
            "orderType": {
                "type": "string",
                "enum": [t.value for t in OrderType],
                "default": OrderType.MARKET.value,
            },
            "price": positive
            | {"maximum": max_price, "description": "the limit price: required for a LIMIT order"},
            "clientOrderId": {
                "type": "string",
                "pattern": "^[A-Za-z0-9._-]{0,36}$",
                "description": "absent or empty: api-<random hex>",
            },
        },
    )


# --- paths ------------------------------------------------------------------------------------


def _paths(
    *,
    max_body_bytes: int,
    max_nesting: int,
    max_line_bytes: int,
    idle_timeout_s: float,
    max_symbols: int,
    max_quantity: float,
    max_price: float,
) -> dict[str, Any]:
    symbols = symbols_schema(max_symbols)
    # Any request can meet the HTTP parser's 400 (a request line or header too long, bad HTTP).
    parser = f"Malformed request (HTTP parser: a request line or header over {max_line_bytes:,} B)"
    unknown_symbol = error("Unknown symbol (the message lists them)")
    # Until trading starts the start-up listener holds the port (admin/startup.py): every
    # request but GET /health gets 503 with an error.
    starting = "The daemon is still starting: only GET /health answers"

    def with_starting(responses: dict[str, Any]) -> dict[str, Any]:
        own = responses.get("503")
        if own is None:
            return responses | {"503": error(starting)}
        return responses | {"503": own | {"description": f"{own['description']}; or: {starting}"}}

    def get(
        summary: str,
        answer: dict[str, Any],
        *,
        parameters: list[dict[str, Any]] | None = None,
        more: dict[str, Any] | None = None,
        starting_503: bool = True,
    ) -> dict[str, Any]:
        """A GET: its 200 answer, the parser's 400 unless ``more`` has a 400 of its own, the
        start-up 503."""
        op: dict[str, Any] = {"summary": summary}
        if parameters:
            op["parameters"] = parameters
        responses = {"200": answer, "400": error(parser)} | (more or {})
        return op | {"responses": with_starting(responses) if starting_503 else responses}

    def post(
        summary: str,
        answer: dict[str, Any],
        body: dict[str, Any] | None,
        *,
        more: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A POST: bearer auth (401, 403), then its body (400, 408, 413, 415) if it has one."""
        codes: dict[str, Any] = {
            "200": answer,
            "400": error(parser),
            "401": error("Missing or invalid admin token"),
            "403": error("POSTs are disabled: no admin token configured"),
        }
        if body is not None:
            codes |= {
                "400": error(
                    f"Body not a JSON object, nested more than {max_nesting} deep, NaN or "
                    "Infinity, or a field invalid (the message names it); or: " + parser
                ),
                "408": error(f"Body not received within {idle_timeout_s:g} s"),
                "413": error(f"Body over {max_body_bytes:,} bytes"),
                "415": error("Content-Type is not application/json, or its charset not utf-8"),
            }
        op: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}]}
        if body is not None:
            op["requestBody"] = body
        return op | {"responses": with_starting(codes | (more or {}))}

    def query(name: str, schema: Schema, description: str = "") -> dict[str, Any]:
        param = {"name": name, "in": "query", "required": False, "schema": schema}
        return param | ({"description": description} if description else {})

    def endpoint(*values: str) -> dict[str, Any]:
        return query("endpoint", {"type": "string", "enum": list(values), "default": values[0]})

    no_regime = error("Regime detection is not running")
    return {
        "/health": {
            "get": get(
                "Overall status and each component's state",
                json_answer("Running (or about to: status starting)", ref("Health")),
                more={
                    "503": json_answer(
                        "Still starting (the start-up listener: Starting), or stopping (Health)",
                        {"oneOf": [ref("Starting"), ref("Health")]},
                    )
                },
                starting_503=False,
            )
        },
        "/metrics": {
            "get": get(
                "Prometheus metrics",
                {
                    "description": "Prometheus text exposition format 0.0.4",
                    "content": {"text/plain": {"schema": STRING}},
                },
            )
        },
        "/api/openapi.json": {
            "get": get(
                "This document",
                json_answer(
                    "OpenAPI 3.0.3",
                    obj({"openapi": STRING, "info": ANY_OBJECT, "paths": ANY_OBJECT}),
                ),
            )
        },
        "/api/trading/data-orchestrator": {
            "get": get(
                "Orchestrator metrics, or the latest market data of some symbols",
                json_answer(
                    "endpoint=metrics: OrchestratorMetrics; endpoint=market-data: MarketData",
                    {"oneOf": [ref("OrchestratorMetrics"), ref("MarketData")]},
                ),
                parameters=[
                    endpoint("metrics", "market-data"),
                    query(
                        "symbols",
                        {
                            "type": "string",
                            "pattern": SYMBOL_LIST_PATTERN,
                            "example": "BTCUSDT,ETHUSDT",
                        },
                        "comma-separated; required by endpoint=market-data",
                    ),
                ],
                more={
                    "400": error(
                        "Unknown endpoint, or symbols missing or empty for market-data; or: "
                        + parser
                    ),
                    "404": unknown_symbol,
                },
            ),
            "post": post(
                "Start or stop refreshing symbols",
                json_answer("Done", ref("FlowChanged")),
                json_body(
                    obj(
                        {
                            "action": {"type": "string", "enum": ["start-flow", "stop-flow"]},
                            "symbols": symbols,
                        }
                    ),
                    {"action": "start-flow", "symbols": ["BTCUSDT"]},
                ),
                more={"404": unknown_symbol},
            ),
        },
        "/api/trading/data-orchestrator/reset-circuit-breaker": {
            "post": post(
                "Close every source's circuit breaker",
                json_answer(
                    "Reset",
                    obj(
                        {
                            "reset": {"type": "boolean", "enum": [True]},
                            "breakers": mapping(ref("Breaker")),
                        }
                    ),
                ),
                None,
            )
        },
        "/api/trading/market-regime": {
            "get": get(
                "The market's regime, or every symbol's regime and confidence too",
                json_answer(
                    "endpoint=current-regime: MarketRegime; endpoint=regime-confidence: the "
                    "market and each labelled symbol",
                    {
                        "oneOf": [
                            ref("MarketRegime"),
                            obj(
                                {
                                    "market": ref("MarketRegime"),
                                    "symbols": mapping(ref("SymbolRegime")),
                                }
                            ),
                        ]
                    },
                ),
                parameters=[endpoint("current-regime", "regime-confidence")],
                more={
                    "400": error("Unknown endpoint; or: " + parser),
                    "503": no_regime,
                },
            ),
            "post": post(
                "Regime and confidence of the given symbols",
                json_answer(
                    "Each symbol's regime (null: not labelled yet) and confidence",
                    obj(
                        {
                            "symbols": mapping(
                                obj(
                                    {
                                        "regime": nullable({"type": "string", "enum": _REGIMES}),
                                        "confidence": NUMBER,
                                    }
                                )
                            )
                        }
                    ),
                ),
                json_body(obj({"symbols": symbols}), {"symbols": ["BTCUSDT"]}),
                more={"404": unknown_symbol, "503": no_regime},
            ),
        },
        "/api/trading/order-router": {
            "get": get(
                "Per-venue routing metrics, or the reconciliation status",
                json_answer(
                    "endpoint=metrics: RouterMetrics; endpoint=reconciliation: Reconciliation",
                    {"oneOf": [ref("RouterMetrics"), ref("Reconciliation")]},
                ),
                parameters=[endpoint("metrics", "reconciliation")],
                more={
                    "400": error("Unknown endpoint; or: " + parser),
                    "404": error("Reconciliation is not configured"),
                },
            ),
            "post": post(
                "Route an order through the risk manager and the router",
                json_answer(
                    "Routed and done (filled, cancelled or rejected by the venue)",
                    ref("OrderRouted"),
                ),
                json_body(
                    obj(
                        {
                            "action": {"type": "string", "enum": ["route"]},
                            "orderRequest": order_request_schema(
                                max_quantity=max_quantity, max_price=max_price
                            ),
                        }
                    ),
                    {
                        "action": "route",
                        "orderRequest": {"symbol": "BTCUSDT", "side": "BUY", "quantity": 0.001},
                    },
                ),
                more={
                    "202": json_answer(
                        "Routed, still in flight after the order timeout", ref("OrderInFlight")
                    ),
                    "404": unknown_symbol,
                    "409": error("No market data for the symbol yet"),
                    "422": json_answer(
                        "Refused by the risk manager (the reason)", ref("OrderRefused")
                    ),
                },
            ),
        },
        "/api/trading/anomalies": {
            "get": get(
                "Active anomalies per symbol: kind, score, since_ms",
                json_answer("Active anomalies", ref("Anomalies")),
                parameters=[
                    query(
                        "symbols",
                        {
                            "type": "string",
                            "pattern": SYMBOL_LIST_PATTERN,
                            "example": "BTCUSDT,ETHUSDT",
                        },
                        "comma-separated; default: every symbol",
                    )
                ],
                more={
                    "400": error("symbols given but empty; or: " + parser),
                    "404": unknown_symbol,
                },
            )
        },
        "/api/trading/strategy": {
            "get": get(
                "Strategy parameters in force and the [adapt] runs",
                json_answer("The strategy in force", ref("Strategy")),
                more={"404": error("No strategy status in this process")},
            )
        },
        "/api/trading/positions": {
            "get": get("Positions and PnL", json_answer("Positions by symbol", ref("Positions")))
        },
        "/api/trading/risk": {
            "get": get(
                "Trading state, check counters, exposure, drawdown, VaR",
                json_answer("Risk state and checks", ref("Risk")),
            )
        },
        "/api/trading/risk/state": {
            "post": post(
                "Set ACTIVE / REDUCING / HALTED (re-arms a tripped kill switch)",
                json_answer("The state now", ref("StateChanged")),
                json_body(
                    obj(
                        {
                            "state": {
                                "type": "string",
                                "enum": _STATES,
                                "description": "case-insensitive",
                            }
                        },
                        {
                            "reason": {
                                "type": "string",
                                "pattern": NOT_BLANK,
                                "minLength": 1,
                                "maxLength": 200,
                                "default": "admin",
                            }
                        },
                    ),
                    {"state": "ACTIVE", "reason": "checked"},
                ),
            )
        },
        "/api/trading/dead-letters": {
            "get": get(
                "Dead letters kept for retry (the newest [bus] dead_letter_size)",
                json_answer("Oldest first", ref("DeadLetters")),
                more={"404": error("No event bus in this process")},
            ),
            "post": post(
                "Retry one dead letter, or all, on the handler that failed (once each)",
                json_answer(
                    "Retried: a letter retried with success is dropped; one that fails again is "
                    "kept with attempts + 1 and the new error",
                    ref("Retried"),
                ),
                json_body(
                    {
                        "description": "exactly one of id, or all: true",
                        "oneOf": [
                            obj(
                                {"id": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}},
                                {"all": {"type": "boolean", "enum": [False]}},
                            ),
                            obj({"all": {"type": "boolean", "enum": [True]}})
                            | {"not": {"required": ["id"]}},
                        ],
                    },
                    {"all": True},
                ),
                more={"404": error("No dead letter with that id, or no event bus in this process")},
            ),
        },
    }


def openapi_document(
    *,
    max_body_bytes: int,
    max_nesting: int,
    max_line_bytes: int,
    idle_timeout_s: float,
    max_symbols: int,
    max_quantity: float,
    max_price: float,
) -> dict[str, Any]:
    """The document ``GET /api/openapi.json`` serves, with the server's request limits."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "QuantumTrade admin API",
            "version": "0.3.0",
            "description": (
                'Every answer is JSON but /metrics; an error is {"error": message} with a 4xx '
                "status, including the HTTP parser's own refusals (400: request line or a "
                f"header over {max_line_bytes:,} bytes, malformed HTTP), an unknown path (404) "
                "and a method a path does not have (405). HEAD is answered for every GET. POST "
                "bodies must be Content-Type: application/json (charset utf-8 or none), else "
                "415. A connection idle, or still sending its request line and headers, for "
                f"{idle_timeout_s:g} s is closed."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "paths": _paths(
            max_body_bytes=max_body_bytes,
            max_nesting=max_nesting,
            max_line_bytes=max_line_bytes,
            idle_timeout_s=idle_timeout_s,
            max_symbols=max_symbols,
            max_quantity=max_quantity,
            max_price=max_price,
        ),
    }
