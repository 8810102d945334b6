"""The ledger's optional keyed MAC: an HMAC-SHA256 of each run's record hash, under a key the ledger never holds.

Why: the hash chain (`market.ledger.record_hash`) is self-consistent, not authenticated — whoever can write
the file can edit a run and recompute every hash after it with the project's own function. With a key,
each run also stores ``mac = HMAC-SHA256(key, record_hash)`` (hex; the message is the 64 ASCII hex
digits of the record hash, so ``printf %s HASH | openssl dgst -sha256 -hmac KEY`` recomputes it). As
``record_hash`` chains through ``prev_hash``, a valid MAC on run *n* vouches for runs 1 … *n*; a forger
without the key cannot recompute the MACs of the runs they rewrite. It does not show that the latest runs
were deleted (with their MACs): a receipt of the last run does (`market.receipts`). Nothing protects
against the key holder.

The key: ``--key-file FILE`` (its bytes, trailing CR/LF dropped) or else the environment variable
``PAYOUTSIM_LEDGER_KEY`` (its UTF-8 bytes); at least 16 bytes. It is never written to the ledger.

Storage: the table ``run_macs (run_id, mac)`` (`MAC_SCHEMA`), written in the run's own transaction. A
separate table keeps ``runs`` and every record hash exactly as before, so ledgers written before the MAC
(no such table) open, show and verify unchanged; opening one for writing creates the empty table.

Rules `market.ledger.record_run` applies (`check_writer_key`): once a ledger holds MACs, a run is
recorded only with the key that made them (no key, or another key: `LedgerKeyError`, exit 2, nothing
written). Rules of the check with a key (`mac_findings`): every stored MAC must match; at least one run
must carry one; once a run carries one, every later run must too. Runs recorded before the key was first
used carry none and are covered through the chain by the first MAC.

This module imports nothing of `market.ledger` (which calls it inside its write transaction).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from valuation.errors import InputError
from valuation.files import NOT_A_FILE

if TYPE_CHECKING:
    import duckdb

KEY_ENV = "PAYOUTSIM_LEDGER_KEY"
MIN_KEY_BYTES = 16
MAC_TABLE = "run_macs"
MAC_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {MAC_TABLE} (
    run_id VARCHAR PRIMARY KEY REFERENCES runs (run_id),
    mac VARCHAR NOT NULL
);
"""
KEY_HINT = f"set {KEY_ENV} or give --key-file"


class LedgerKeyError(InputError):
    """The MAC key is missing, unreadable, too short, or not the key the ledger's MACs were made with (exit 2)."""


def ledger_key(key_file: str | Path | None) -> bytes | None:
    """The MAC key: the bytes of `key_file` (trailing CR/LF dropped) when given, else ``$PAYOUTSIM_LEDGER_KEY``
    (UTF-8; unset or empty: no key, None). Raises `LedgerKeyError` for a missing or unreadable file or a key
    shorter than `MIN_KEY_BYTES`."""
    if key_file is not None:
        path = Path(key_file)
        if path.is_dir():
            raise LedgerKeyError(f"the key file {NOT_A_FILE}", file=path, field="--key-file")
        try:
            key = path.read_bytes().rstrip(b"\r\n")
        except FileNotFoundError:
            raise LedgerKeyError("key file not found", file=path, field="--key-file") from None
        except OSError as err:
            raise LedgerKeyError(f"cannot read the key file: {err.strerror}", file=path, field="--key-file") from None
        where = f"the key file {path}"
    else:
        value = os.environ.get(KEY_ENV, "")
        if not value:
            return None
        key, where = value.encode("utf-8"), f"${KEY_ENV}"
    if len(key) < MIN_KEY_BYTES:
        raise LedgerKeyError(f"{where}: the ledger key must be at least {MIN_KEY_BYTES} bytes (it has {len(key)})")
    return key


def run_mac(key: bytes, record_hash: str) -> str:
    """``HMAC-SHA256(key, record_hash as ASCII)``, hex."""
    return hmac.new(key, record_hash.encode("ascii"), hashlib.sha256).hexdigest()


def has_mac_table(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the ledger has the ``run_macs`` table (ledgers written before the MAC do not)."""
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [MAC_TABLE]).fetchone()
    return bool(row and row[0])


def read_macs(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """``run_id → mac`` of every stored MAC (empty for a ledger without the table)."""
    if not has_mac_table(con):
        return {}
    return {str(r): str(m) for r, m in con.execute(f"SELECT run_id, mac FROM {MAC_TABLE}").fetchall()}


def check_writer_key(con: duckdb.DuckDBPyConnection, key: bytes | None, ledger: str | Path) -> None:
    """Before appending a run: if the ledger holds MACs, `key` must be given and match the latest one.

    Raises `LedgerKeyError` (exit 2) otherwise, so a run is never added without a MAC (it would fail the
    keyed check) nor with one made by another key.
    """
    if not has_mac_table(con):
        return
    last = con.execute(
        f"SELECT r.seq, r.record_hash, m.mac FROM {MAC_TABLE} m JOIN runs r USING (run_id) ORDER BY r.seq DESC LIMIT 1"
    ).fetchone()
    if last is None:
        return
    if key is None:
        raise LedgerKeyError(
            f"this ledger's runs carry a MAC (recorded with a key): {KEY_HINT} with the same key to record, "
            "so the new run carries one too",
            file=ledger,
        )
    if not hmac.compare_digest(str(last[2]), run_mac(key, str(last[1]))):
        raise LedgerKeyError(
            f"the key does not match the MAC of run seq {last[0]} (a different key?); nothing recorded", file=ledger
        )


def insert_mac(con: duckdb.DuckDBPyConnection, run_id: str, record_hash: str, key: bytes) -> None:
    """Store the MAC of one run (inside the caller's transaction)."""
    con.execute(f"INSERT INTO {MAC_TABLE} (run_id, mac) VALUES (?, ?)", [run_id, run_mac(key, record_hash)])


@dataclass
class MacFindings:
    """What the MAC check found: problems (empty: all good) and one-line notes for the report."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def mac_findings(chain: list[tuple[int, str, str]], macs: dict[str, str], key: bytes | None) -> MacFindings:
    """Check the stored MACs of `chain` (``(seq, run_id, record_hash)`` per run, in order) with `key`.

    Without a key nothing is checked and the note says so. With one: every MAC must match its run's stored
    record hash; at least one run must carry one (unless the ledger is empty); no run after the first
    MAC'd one may lack one; a MAC of an unknown run is a problem.
    """
    found = MacFindings()
    n_with = sum(1 for _, rid, _ in chain if rid in macs)
    if key is None:
        found.notes.append(f"MACs: not checked (no key: {KEY_HINT}); {n_with} of {len(chain)} run(s) carry one")
        return found
    known = {rid for _, rid, _ in chain}
    for rid in sorted(set(macs) - known):
        found.problems.append(f"MAC stored for an unknown run {rid!r}")
    if chain and n_with == 0:
        found.problems.append("no run carries a MAC although a key was given (recorded without a key, or the MACs were removed)")
        return found
    first = None
    valid = 0
    for seq, rid, record_hash in chain:
        mac = macs.get(rid)
        where = f"run {rid} (seq {seq})"
        if mac is None:
            if first is not None:
                found.problems.append(f"{where}: no MAC although earlier runs carry one (removed?)")
            continue
        first = seq if first is None else first
        if hmac.compare_digest(mac, run_mac(key, record_hash)):
            valid += 1
        else:
            found.problems.append(
                f"{where}: MAC does not match its record hash (this run or one before it was changed, or the key is not the ledger's)"
            )
    note = f"MACs: {valid} of {len(chain)} run(s) carry a valid MAC (checked with the key)"
    if first is not None and first > 1 and not found.problems:
        note += f"; runs before seq {first} were recorded without the key and are covered through the chain"
    found.notes.append(note)
    return found
