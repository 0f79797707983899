"""NautilusTrader as a peer figure for our own benchmarks, callable from our Python 3.11 venv.

NautilusTrader needs Python >= 3.12, so it lives in its own venv (.venv-nautilus, made by
scripts/bench/nautilus_setup.sh) and runs in a subprocess (scripts/bench/nautilus_ema.py).
Nothing here imports quantumtrade or NautilusTrader:

    import sys; sys.path.insert(0, "scripts/bench")
    from nautilus_peer import run_nautilus
    peer = run_nautilus(Path("../shared/data/candles/binance-spot-1h-2024"))
    if peer: print(peer["run_s"], peer["orders"], peer["pnl"])

Run directly, it prints the dict: .venv/bin/python scripts/bench/nautilus_peer.py DATA_DIR [REPEAT]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SETUP = HERE / "nautilus_setup.sh"
SCRIPT = HERE / "nautilus_ema.py"


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def nautilus_python() -> Path | None:
    """Set up .venv-nautilus if needed (quietly) and return its python, or None with a reason."""
    try:
        proc = subprocess.run(
            ["bash", str(SETUP)], cwd=ROOT, capture_output=True, text=True, timeout=1800
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"nautilus_peer: setup could not run: {exc}")
        return None
    if proc.returncode != 0:
        reason = _last_line(proc.stderr) or f"exit code {proc.returncode}"
        print(f"nautilus_peer: NautilusTrader cannot be set up here: {reason}")
        return None
    python = Path(_last_line(proc.stdout))
    if not python.is_file():
        print(f"nautilus_peer: setup printed no usable python path ({python})")
        return None
    return python


def run_nautilus(
    data_dir: Path,
    repeat: int = 3,
    *,
    notional: float = 1000.0,
    fee_bps: float = 10.0,
    echo: bool = False,
    timeout: float = 3600.0,
) -> dict[str, Any] | None:
    """Run NautilusTrader's BacktestEngine on ``data_dir`` (EMA 12/26 crossover) and return
    the JSON its script prints last: nautilus_version, bars, symbols, run_s (min of ``repeat``
    engine.run() wall times), runs_s, cpu_s, orders, fills, pnl (realised, USDT).

    Returns None, after printing why, when NautilusTrader cannot be set up or the run fails.
    ``echo`` prints the script's readable lines too.
    """
    python = nautilus_python()
    if python is None:
        return None
    cmd = [
        str(python),
        str(SCRIPT),
        "--data",
        str(Path(data_dir).resolve()),
        "--repeat",
        str(repeat),
        "--notional",
        str(notional),
        "--fee-bps",
        str(fee_bps),
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"nautilus_peer: the NautilusTrader run did not finish: {exc}")
        return None
    if echo:
        for line in proc.stdout.strip().splitlines()[:-1]:
            print(f"  nautilus: {line}")
    if proc.returncode != 0:
        reason = _last_line(proc.stderr) or f"exit code {proc.returncode}"
        print(f"nautilus_peer: the NautilusTrader run failed: {reason}")
        return None
    try:
        result = json.loads(_last_line(proc.stdout))
    except json.JSONDecodeError:
        print(f"nautilus_peer: no JSON on the run's last line: {_last_line(proc.stdout)[:200]}")
        return None
    if not isinstance(result, dict):
        print("nautilus_peer: the run's last line is not a JSON object")
        return None
    return result


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out = run_nautilus(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3, echo=True)
    print(json.dumps(out))
    raise SystemExit(0 if out is not None else 1)
