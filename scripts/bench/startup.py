"""How long a start takes until ``/health`` first answers, and until it says ``ok``.

* ``daemon`` (default): ``python -m quantumtrade run`` (paper mode, embedded defaults, a fresh
  SQLite log) twice: with an empty NUMBA_CACHE_DIR (every kernel compiles, as on a fresh clone
  whose install did not warm up) and again on the cache that run filled.
* ``--clone``: ``git clone`` this checkout into a temporary directory and time ``scripts/run.sh``
  there from nothing: venv, pip install (pip's own download cache is used if present), the
  warm-up, the start. ``--worktree`` copies the working tree's files instead (tracked and
  untracked, not ignored: what a commit of them would clone), for changes not committed yet.

Times are from the process's spawn; ``/health`` is polled every 0.1 s. Last line: a JSON
object with the figures.

Run: .venv/bin/python scripts/bench/startup.py [--clone]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 1800.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(proc: subprocess.Popen[bytes], port: int, t0: float) -> dict[str, float]:
    """Seconds from spawn to the first /health answer and to status ok (or degraded)."""
    figures: dict[str, float] = {}
    while time.monotonic() - t0 < LIMIT_S:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:  # 503 while starting
            body = json.load(exc)
        except OSError:
            time.sleep(0.1)
            continue
        figures.setdefault("first_answer_s", round(time.monotonic() - t0, 2))
        if body["status"] in ("ok", "degraded"):
            figures["ok_s"] = round(time.monotonic() - t0, 2)
            return figures
        time.sleep(0.1)
    raise SystemExit("no ok within the limit")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def run_daemon(cache: str, work: Path) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env |= {
        "NUMBA_CACHE_DIR": cache,
        "QT_ADMIN__PORT": str(port),
        "QT_DATABASE__SQLITE_PATH": str(work / f"events-{port}.sqlite"),
    }
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantumtrade", "run"],
        env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return poll(proc, port, t0)
    finally:
        stop(proc)


def run_clone(work: Path, *, worktree: bool) -> dict[str, float]:
    clone = work / "quantumtrade"
    if worktree:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode().split("\0")  # fmt: skip
        for name in filter(None, listed):
            if (ROOT / name).is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                (clone / name).write_bytes((ROOT / name).read_bytes())
                (clone / name).chmod((ROOT / name).stat().st_mode)
    else:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "NUMBA_", "VIRTUAL"))}
    env |= {"QT_ADMIN__PORT": str(port)}
    log = open(work / "run.log", "wb")  # open for the process's lifetime
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["scripts/run.sh"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        figures = poll(proc, port, t0)
    finally:
        stop(proc)
        log.close()
    text = (work / "run.log").read_text(errors="replace")
    # The warm-ups' own totals: the install's (bootstrap.sh), then run.sh's (from the cache).
    done = [float(m) for m in re.findall(r"^warmup: done in (\d+\.\d) s$", text, re.MULTILINE)]
    figures["warmup_at_install_s"], figures["warmup_in_run_sh_s"] = done[0], done[-1]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", action="store_true", help="scripts/run.sh on a fresh clone")
    parser.add_argument("--worktree", action="store_true", help="--clone of the working tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.clone or args.worktree:
            figures = {"clone_run_sh": run_clone(work, worktree=args.worktree)}
        else:
            cache = str(work / "numba-cache")
            figures = {"empty_cache": run_daemon(cache, work)}
            figures["warm_cache"] = run_daemon(cache, work)
    for name, f in figures.items():
        print(
            f"{name:14} first /health answer {f['first_answer_s']:7.2f} s   ok {f['ok_s']:7.2f} s"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
