"""Receipts and the full ledger check: tamper evidence that does not live in the ledger file.

The hash chain (`market.ledger.verify`) shows that the file is self-consistent; whoever can write it can
rewrite history and recompute every hash. What exposes them is something kept elsewhere:

* a **receipt** (`Receipt`, ``receipt.json``): issued after each recording (``payoutsim payout`` /
  ``run``), it names the ledger, each run it covers (``run_id``, ``seq``, ``record_hash``) and the ledger's
  **head** then (the ``seq`` and ``record_hash`` of its last run). As each record hash covers its rows and
  the previous run's hash, a receipt pins the whole history from genesis to that run: any later change to
  it, or deleting runs down below the receipt's seq, fails `check_history`. Members keep their receipts;
* a **head hash** (``--head HASH``): the record hash of some run, copied from a receipt or a printout:
  that run must still be in the ledger with everything before it intact;
* the **keyed MAC** (`market.ledger_mac`): checked when the key is given.

Not covered: runs recorded after the newest receipt or head anyone kept can be changed or deleted
consistently (with a key: changed, not deleted); nothing protects against the key holder.

Receipt file format (JSON, ``format`` = `RECEIPT_FORMAT`)::

    {"format": "payoutsim-ledger-receipt/1", "ledger": "runs/ledger.duckdb",
     "runs": [{"run_id": "…16 hex…", "seq": 3, "scenario": "example", "period": "2025-Q1",
               "record_hash": "…64 hex…"}],
     "head": {"seq": 3, "record_hash": "…64 hex…"}}

``ledger`` is where the ledger was when the receipt was issued (informational: the check reads the
ledger it is given). The file depends only on the ledger's content, so issuing it twice gives the same bytes.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from market.ledger import VerifyReport, connect, verify
from market.ledger_mac import check_writer_key, has_mac_table, mac_findings
from valuation.errors import InputError
from valuation.files import atomic_write_json, require_file

RECEIPT_FORMAT = "payoutsim-ledger-receipt/1"
RECEIPTS_DIR = "receipts"
_HEX64 = re.compile(r"[0-9a-f]{64}")
UNPROTECTED_NOTE = (
    "note: without a receipt (--receipt), a head hash (--head) or the MAC key, this shows only that the file is "
    "self-consistent: anyone who can write the file can rewrite its history and recompute every hash"
)


@dataclass(frozen=True)
class ReceiptRun:
    """One run a receipt covers: its id, seq and record hash (scenario and period: for people)."""

    run_id: str
    seq: int
    record_hash: str
    scenario: str = ""
    period: str = ""


@dataclass(frozen=True)
class Head:
    """The ledger's head: the ``seq`` and ``record_hash`` of its last run."""

    seq: int
    record_hash: str


@dataclass(frozen=True)
class Receipt:
    """A receipt: the ledger it was issued for, the runs it covers and the head at issue time.
    ``source`` is the file it was read from (for messages; not written)."""

    ledger: str
    runs: tuple[ReceiptRun, ...]
    head: Head
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The receipt file's content (module docstring)."""
        return {
            "format": RECEIPT_FORMAT,
            "ledger": self.ledger,
            "runs": [
                {"run_id": r.run_id, "seq": r.seq, "scenario": r.scenario, "period": r.period, "record_hash": r.record_hash}
                for r in self.runs
            ],
            "head": {"seq": self.head.seq, "record_hash": self.head.record_hash},
        }


# ---------------------------------------------------------------------------------------------------
# issuing, writing, reading


def issue_receipt(ledger: str | Path, run_ids: Sequence[str]) -> Receipt:
    """A receipt for `run_ids` (recorded runs of `ledger`, listed by seq) and the ledger's current head.

    Raises `InputError` for a run id that is not in the ledger or an empty ledger.
    """
    with connect(ledger, read_only=True) as con:
        rows = con.execute("SELECT run_id, seq, record_hash, scenario_name, period FROM runs ORDER BY seq").fetchall()
    by_id = {str(r[0]): ReceiptRun(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows}
    if not rows:
        raise InputError("the ledger has no run to issue a receipt for", file=ledger)
    for rid in run_ids:
        if rid not in by_id:
            raise InputError(f"no run {rid!r} in the ledger to issue a receipt for", file=ledger, field="run")
    runs = tuple(sorted({by_id[rid] for rid in run_ids}, key=lambda r: r.seq))
    return Receipt(str(ledger), runs, Head(int(rows[-1][1]), str(rows[-1][2])))


def default_receipt_path(ledger: str | Path, receipt: Receipt) -> Path:
    """Where ``payoutsim payout`` writes a receipt by default: ``<ledger folder>/receipts/<ledger name>-seq<head>.json``."""
    ledger = Path(ledger)
    return ledger.parent / RECEIPTS_DIR / f"{ledger.stem}-seq{receipt.head.seq}.json"


def write_receipt(path: str | Path, receipt: Receipt) -> Path:
    """Write `receipt` to `path` atomically; `InputError` (exit 2) when it cannot be written (the runs stay
    recorded: the message says so)."""
    path = Path(path)
    try:
        atomic_write_json(path, receipt.to_json())
    except OSError as err:
        raise InputError(
            f"cannot write the receipt ({err.strerror or err}); the run(s) are recorded in the ledger, their hashes "
            "are printed above",
            file=path,
        ) from None
    return path


def load_receipt(path: str | Path) -> Receipt:
    """Read and check a receipt file; `InputError` (exit 2) naming the file and field when it is not one."""
    path = require_file(path, missing="receipt file not found", field="--receipt")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the receipt: {err}", file=path) from None
    except json.JSONDecodeError as err:
        raise InputError(f"not a receipt (invalid JSON: {err.msg} at line {err.lineno})", file=path) from None
    if not isinstance(data, dict) or data.get("format") != RECEIPT_FORMAT:
        raise InputError(f"not a payoutsim ledger receipt (expected format {RECEIPT_FORMAT!r})", file=path, field="format")
    raw_runs = data.get("runs")
    if not isinstance(raw_runs, list):
        raise InputError("expected a list of runs", file=path, field="runs")
    runs = []
    for i, item in enumerate(raw_runs, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("run_id"), str):
            raise InputError("expected an object with run_id, seq and record_hash", file=path, field=f"runs[{i}]")
        seq, digest = _seq_and_hash(path, item, f"runs[{i}]")
        runs.append(ReceiptRun(item["run_id"], seq, digest, str(item.get("scenario", "")), str(item.get("period", ""))))
    head = data.get("head")
    if not isinstance(head, dict):
        raise InputError("expected an object with seq and record_hash", file=path, field="head")
    head_seq, head_hash = _seq_and_hash(path, head, "head")
    return Receipt(str(data.get("ledger", "")), tuple(runs), Head(head_seq, head_hash), source=str(path))


def _seq_and_hash(path: Path, item: dict[str, Any], where: str) -> tuple[int, str]:
    seq = item.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise InputError(f"expected a run number ≥ 1, got {seq!r}", file=path, field=f"{where}.seq")
    return seq, parse_hash(item.get("record_hash"), file=path, field=f"{where}.record_hash")


def parse_hash(value: object, *, file: str | Path | None = None, field: str = "--head") -> str:
    """A record hash: 64 hex digits (case ignored), returned in lower case; `InputError` otherwise."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _HEX64.fullmatch(text):
        raise InputError(f"expected a record hash of 64 hex digits, got {value!r}", file=file, field=field)
    return text


def receipt_lines(receipt: Receipt, path: str | Path, *, keyed: bool) -> list[str]:
    """What the commands print after recording: where the receipt is, each run's record hash, the head,
    the command that checks it, and whether new runs carry a MAC (`keyed`)."""
    lines = [f"receipt: {path}"]
    lines += [f"  run {r.run_id} (seq {r.seq}, period {r.period!r}): record hash {r.record_hash}" for r in receipt.runs]
    lines.append(f"  head: seq {receipt.head.seq}, record hash {receipt.head.record_hash}")
    lines.append(
        f"  keep it; check the ledger with: payoutsim ledger verify --ledger {shlex.quote(receipt.ledger)} "
        f"--receipt {shlex.quote(str(path))}"
    )
    if keyed:
        lines.append("  MAC: runs recorded now carry an HMAC-SHA256 of their record hash (the key is not stored)")
    return lines


# ---------------------------------------------------------------------------------------------------
# checking


@dataclass
class LedgerCheck:
    """`check_history`'s result: the chain's own report, every problem (the chain's, the receipts', the
    heads', the MACs'; empty: all good) and one-line notes on what was checked."""

    report: VerifyReport
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_history(
    ledger: str | Path,
    *,
    receipts: Sequence[Receipt] = (),
    heads: Sequence[str] = (),
    key: bytes | None = None,
) -> LedgerCheck:
    """`market.ledger.verify`, then every receipt and head against the chain (`check_point`) and, with
    `key`, every MAC (`market.ledger_mac.mac_findings`). Without any of the three a note says that the
    chain alone proves nothing against whoever can write the file."""
    report = verify(ledger)
    check = LedgerCheck(report, problems=list(report.problems))
    for receipt in receipts:
        label = f"receipt {receipt.source}".rstrip()
        if receipt.ledger and Path(receipt.ledger).resolve() != Path(ledger).resolve():
            check.notes.append(f"{label}: issued for the ledger at {receipt.ledger}; checked against {ledger}")
        for run in receipt.runs:
            _add(check, check_point(report, f"{label}: run {run.run_id} (seq {run.seq})", run.seq, run.record_hash, run.run_id))
        head = receipt.head
        _add(check, check_point(report, f"{label}: head (seq {head.seq})", head.seq, head.record_hash))
    for digest in heads:
        _add(check, check_head(report, digest))
    chain = [(link.seq, link.run_id, link.record_hash) for link in report.chain]
    macs = mac_findings(chain, report.macs, key)
    check.problems.extend(macs.problems)
    check.notes.extend(macs.notes)
    if not receipts and not heads and key is None:
        check.notes.append(UNPROTECTED_NOTE)
    return check


def _add(check: LedgerCheck, result: tuple[bool, str]) -> None:
    ok, line = result
    (check.notes if ok else check.problems).append(line)


def intact_through(report: VerifyReport) -> int:
    """How many leading runs recompute from genesis (runs 1 … this number are intact)."""
    n = 0
    for link in report.chain:
        if not link.intact:
            break
        n += 1
    return n


def check_point(report: VerifyReport, label: str, seq: int, record_hash: str, run_id: str | None = None) -> tuple[bool, str]:
    """Whether the ledger still holds the history a receipt pinned: the run at `seq` has `record_hash` (and
    `run_id`, when given) and the chain from genesis to it recomputes. ``(ok, one line)``."""
    if seq > len(report.chain):
        return False, (
            f"{label}: missing: the ledger has {len(report.chain)} run(s), the receipt covers seq {seq} "
            "(runs were deleted, or the receipt belongs to another ledger)"
        )
    link = report.chain[seq - 1]
    if link.record_hash != record_hash or (run_id is not None and link.run_id != run_id):
        return False, (
            f"{label}: the run at seq {seq} is {link.run_id} with record hash {link.record_hash}, the receipt says "
            f"record hash {record_hash}: the history up to it was rewritten (or the receipt belongs to another ledger)"
        )
    first_bad = intact_through(report) + 1
    if first_bad <= seq:
        return False, (
            f"{label}: the record hash matches, but the hash chain up to seq {seq} does not recompute (first broken "
            f"at seq {first_bad}): rows of it or before it were changed"
        )
    return True, f"{label}: intact (the history up to seq {seq} is unchanged)"


def check_head(report: VerifyReport, digest: str) -> tuple[bool, str]:
    """`check_point` for a bare head hash: the run with that record hash, wherever it is."""
    for link in report.chain:
        if link.record_hash == digest:
            return check_point(report, f"head {digest}", link.seq, digest)
    return False, (
        f"head {digest}: no run has record hash {digest}: the history up to that run was changed, or the run "
        "was deleted (or the hash belongs to another ledger)"
    )


def check_key(ledger: str | Path, key: bytes | None) -> None:
    """Before any work: a given `key` must be the one that made the MACs `ledger` holds (if it exists and
    holds any; `market.ledger_mac.LedgerKeyError`, exit 2). A missing key is left to
    `market.ledger.record_run`, which refuses it only when a new run would be added (re-running what is
    already recorded needs no key)."""
    if key is None or not Path(ledger).is_file():
        return
    with connect(ledger, read_only=True) as con:
        if has_mac_table(con):
            check_writer_key(con, key, ledger)



def save_receipt(ledger: str | Path, run_ids: Sequence[str], path: str | Path | None = None) -> tuple[Receipt, Path]:
    """Issue the receipt of `run_ids` (`issue_receipt`) and write it to `path` (default:
    `default_receipt_path`). Returns the receipt and where it was written."""
    receipt = issue_receipt(ledger, run_ids)
    return receipt, write_receipt(default_receipt_path(ledger, receipt) if path is None else path, receipt)
