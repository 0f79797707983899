"""``quantumtrade regime detect`` is honest about its input and output: bad rows are rejected
by the daemon's validation and counted (not labelled), warm-up rows are reported as
unlabelled, a truncated gzip or an unwritable output is one line naming the file, never a
traceback."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from quantumtrade.cli import main

BAR_MS = 3_600_000
T0 = 1_700_000_000_000
N = 300
CONFIG = "[regime]\nwarmup = 100\nhistory = 300\n"


def _rows(n: int = N, seed: int = 5) -> list[list[object]]:
    """A clean random-walk market: timestamp, open, high, low, close, volume."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    rows: list[list[object]] = []
    prev = close[0]
    for k in range(n):
        c = float(close[k])
        o = float(prev)
        hi, lo = max(o, c) * 1.002, min(o, c) * 0.998
        rows.append([T0 + BAR_MS * k, o, hi, lo, c, 1000.0 + k])
        prev = c
    return rows


def _write(path: Path, rows: list[list[object]]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        w.writerows(rows)
    return path


def _detect(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str], out: Path | None = None
) -> tuple[int, str, str, Path]:
    cfg = tmp_path / "qt.toml"
    cfg.write_text(CONFIG)
    target = out if out is not None else tmp_path / "labels.csv"
    code = main(
        ["regime", "detect", "--input", str(src), "--output", str(target), "--config", str(cfg)]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err, target


def _written(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def test_clean_file_counts_warm_up_rows_as_unlabelled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err, labels = _detect(tmp_path, _write(tmp_path / "c.csv", _rows()), capsys)
    assert code == 0, err
    rows = _written(labels)
    unlabelled = sum(1 for r in rows if r[1] == "")
    # The engine labels from its warm-up on; the rows before it are written without a label.
    assert 90 <= unlabelled <= 100 and all(r[1] == "" for r in rows[:unlabelled])
    assert out.strip() == (
        f"{labels}: {N} rows read, 0 rejected; {N} written: {N - unlabelled} labelled, "
        f"{unlabelled} unlabelled (warm-up)"
    )


@pytest.mark.parametrize(
    ("reason", "spoil"),
    [
        ("non_finite", lambda rows, k: rows[k].__setitem__(4, math.nan)),
        ("non_positive_price", lambda rows, k: rows[k].__setitem__(3, 0.0)),
        ("non_positive_price", lambda rows, k: rows[k].__setitem__(4, -1.0)),
        ("duplicate_timestamp", lambda rows, k: rows[k].__setitem__(0, rows[k - 1][0])),
        ("out_of_order", lambda rows, k: rows[k].__setitem__(0, T0 - BAR_MS)),
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_each_bad_row_is_rejected_counted_and_not_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reason: str, spoil: object, suffix: str
) -> None:
    rows = _rows()
    bad_at = (40, 180)  # one inside warm-up, one after it
    bad_ts = []
    for k in bad_at:
        spoil(rows, k)  # type: ignore[operator]
        bad_ts.append(str(rows[k][0]))
    code, out, err, labels = _detect(tmp_path, _write(tmp_path / f"bad{suffix}", rows), capsys)
    assert code == 0, err
    written = _written(labels)
    assert len(written) == N - 2
    # Neither bad row is written (a duplicate's first copy is, once).
    stamps = [r[0] for r in written]
    assert len(set(stamps)) == len(stamps) and stamps == sorted(stamps, key=int)
    if reason not in ("duplicate_timestamp",):
        assert not set(bad_ts) & set(stamps)
    unlabelled = sum(1 for r in written if r[1] == "")
    assert f"{N} rows read, 2 rejected ({reason} 2); {N - 2} written:" in out
    assert out.strip().endswith(f"{N - 2 - unlabelled} labelled, {unlabelled} unlabelled (warm-up)")


def test_rows_of_different_faults_are_counted_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows()
    rows[150][4] = math.inf
    rows[160][2] = rows[160][3] * 0.5  # high below low
    rows[170][5] = -3.0
    rows[200][0] = rows[199][0]
    code, out, _, _ = _detect(tmp_path, _write(tmp_path / "mixed.csv", rows), capsys)
    assert code == 0
    assert (
        "4 rejected (duplicate_timestamp 1, high_low_inconsistent 1, negative_volume 1, "
        "non_finite 1)" in out
    )


def test_negative_control_the_clean_twin_rejects_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same market without the spoiled rows: every row written, the bad rows' labels kept.
    code, out, _, labels = _detect(tmp_path, _write(tmp_path / "c.csv", _rows()), capsys)
    assert code == 0 and " 0 rejected;" in out and len(_written(labels)) == N


def test_truncated_gzip_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = _write(tmp_path / "whole.csv.gz", _rows()).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    code, out, err, labels = _detect(tmp_path, cut, capsys)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"quantumtrade: {cut}: cannot read")
    assert lines[0].count(str(cut)) == 1
    assert not labels.exists()


def test_missing_input_and_missing_columns_name_the_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.csv"
    code, _, err, _ = _detect(tmp_path, missing, capsys)
    assert code == 1 and err.strip() == f"quantumtrade: cannot read {missing}: no such file"
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("timestamp,close\n1,2\n")
    code, _, err, _ = _detect(tmp_path, narrow, capsys)
    assert code == 1 and err.count(str(narrow)) == 1 and "missing columns" in err


@pytest.mark.parametrize(
    ("where", "why"),
    [
        (lambda tmp: tmp, "Is a directory"),
        (lambda tmp: tmp / "c.csv" / "labels.csv", "Not a directory"),
    ],
)
def test_unwritable_output_says_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: object, why: str
) -> None:
    # Paths no one can write, root included (the tests may run as root).
    src = _write(tmp_path / "c.csv", _rows())
    target = where(tmp_path)  # type: ignore[operator]
    code, out, err, _ = _detect(tmp_path, src, capsys, out=target)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.strip() == f"quantumtrade: cannot write {target}: {why}"


def test_output_in_a_missing_folder_says_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Also a FileNotFoundError underneath: it must not read as a missing input.
    src = _write(tmp_path / "c.csv", _rows())
    target = tmp_path / "no" / "such" / "labels.csv"
    code, _, err, _ = _detect(tmp_path, src, capsys, out=target)
    assert code == 1
    assert err.strip() == f"quantumtrade: cannot write {target}: No such file or directory"
