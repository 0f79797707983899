"""The search ``[adapt]`` runs in its worker process: optimize's pieces on a MarketState snapshot.

``search_recent(cfg, request)`` is handed to the daemon by the command line (as a
``functools.partial`` over the config, so it pickles to a spawned worker). It cuts the snapshot
with ``strategy.adapt.cut`` into one train/test window (the test run warms up on the train bars
before it, as ``optimize`` cuts one), runs a seeded TPE study of ``trials`` train backtests over
the strategy's ``SPACE`` (trials under ``min_trades`` or with an undefined objective pruned),
then the best set and the set in force once each on the test bars, and computes the study's
PBO and deflated Sharpe ratio (``optimize._overfitting``).
"""

from __future__ import annotations

import multiprocessing
import os
import time

from quantumtrade.backtest.data import Candles
from quantumtrade.backtest.optimize import (
    Job,
    Search,
    Span,
    _overfitting,
    evaluate,
    objective_value,
    tell_failure,
    tell_outcome,
)
from quantumtrade.backtest.space import load_space, suggest, with_values
from quantumtrade.config import AppConfig
from quantumtrade.strategy.adapt import AdaptRequest, SearchResult, cut
from quantumtrade.strategy.loader import flat_values, load_strategy


def search_recent(cfg: AppConfig, request: AdaptRequest) -> SearchResult:
    """Tune on the snapshot's train bars, score best and current on its test bars."""
    import optuna
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    if multiprocessing.parent_process() is not None:
        import numba

        from quantumtrade.logs import configure_logging

        # One core for the search: the daemon keeps the rest (and every trial logs at info).
        numba.set_num_threads(1)
        configure_logging("warning", cfg.system.log_format)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    a = request.config
    candles = Candles(
        symbols=request.symbols,
        ts_ms=request.ts_ms,
        prices=request.prices,
        have=request.have,
        bar_ms=request.bar_ms,
        sources=("adapt snapshot",),
    )
    bars = candles.bars
    train_first, test_first = cut(bars, a)
    train = Span(lead=0, first=train_first, stop=test_first)
    test = Span(lead=max(test_first - a.warmup_bars, 0), first=test_first, stop=bars)
    strategy = request.strategy
    space = load_space(strategy, None)
    in_force = flat_values(load_strategy(strategy))
    current = {d.name: in_force[d.name] for d in space}
    search = Search(
        strategy=strategy,
        space=space,
        objective=str(a.objective),
        min_trades=a.min_trades,
        trials=a.trials,
        seed=a.seed,
        storage=None,
        key="adapt",
    )
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=a.seed)
    )
    for _ in range(a.trials):
        trial = study.ask()
        values = suggest(trial, space)
        try:
            outcome = evaluate(cfg, candles, Job(train, with_values(strategy, values), True))
        except Exception as exc:  # one bad trial is recorded and the search goes on
            tell_failure(study, trial, exc)
            continue
        tell_outcome(study, trial, outcome, search)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    scored = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    now = evaluate(cfg, candles, Job(test, strategy, returns=False))
    best = tuned = None
    pbo = dsr = None
    if scored:
        best = {d.name: study.best_trial.params[d.name] for d in space}
        tuned = evaluate(cfg, candles, Job(test, with_values(strategy, best), returns=False))
        p, d = _overfitting(study)
        pbo = p["pbo"] if p else None
        dsr = d["probability"] if d else None
    return SearchResult(
        current=current,
        best=best,
        tuned_score=objective_value(tuned.metrics, search.objective) if tuned else None,
        current_score=objective_value(now.metrics, search.objective),
        tuned_trades=int(tuned.metrics.get("trades") or 0) if tuned else 0,
        current_trades=int(now.metrics.get("trades") or 0),
        trials=len(finished),
        scored_trials=len(scored),
        train_from_ms=int(candles.ts_ms[train_first]),
        test_from_ms=int(candles.ts_ms[test_first]),
        test_to_ms=int(candles.ts_ms[-1]) + candles.bar_ms,
        pbo=pbo,
        deflated_sharpe=dsr,
        elapsed_s=time.perf_counter() - t0,
        pid=os.getpid(),
    )
