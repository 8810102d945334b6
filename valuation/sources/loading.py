"""Load preference data from files and folders into one :class:`PreferenceSet`.

What ``path`` may be (``format="auto"``):

- a file: JSON Lines (``.jsonl``, ``.ndjson``), JSON (``.json``: a list of records, or JSON Lines),
  CSV (``.csv``, all cells read as text), Parquet (``.parquet``/``.pq``); JSON/JSONL/CSV may be
  gzip-compressed (``.gz``);
- a payoutsim synthetic corpus (a folder with ``manifest.json`` and ``train/``): the files in ``train/``
  are the sources (``load_corpus_eval_sets`` reads ``eval/``);
- a local Hugging Face ``datasets`` folder (``save_to_disk``; has ``dataset_info.json``/``state.json``,
  or ``dataset_dict.json`` for several splits, whose rows are read split by split);
- any other folder: every data file directly in it, in name order.

Sources: ``source=`` names the source of every pair; otherwise, if a file's first record has the
``source_column`` field, every record of that file must have it and it names the pair's source;
otherwise the source is the file's stem (``a/b.jsonl.gz`` -> ``b``; a HF folder's name).

JSON and JSON Lines are read as bytes and decoded here, so invalid UTF-8 is reported with its line and
byte offset and a malformed record with its line; CSV goes through polars, Parquet through polars,
HF folders through ``datasets``. Every problem is an ``InputError`` naming the file, the line/row and
the field. Duplicates: see :class:`~valuation.sources.schema.PreferenceSet`.

polars (≈ 0.5 s to import) and ``datasets`` (≈ 1.5 s) are imported inside the functions that read CSV,
Parquet and HF folders, so loading JSON never pays for them.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuation.errors import InputError
from valuation.sources.formats import FORMATS, RecordContext, check_format, detect_format, parse_record
from valuation.sources.schema import Finding, PreferencePair, PreferenceSet
from valuation.text import name_problem

__all__ = ["FORMATS", "load_corpus_eval_sets", "load_preferences"]

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet",
             ".pq": "parquet"}
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class _Input:
    path: Path
    kind: str  # jsonl | json | csv | parquet | hf
    gz: bool = False

    @property
    def stem(self) -> str:
        name = self.path.name
        if self.gz:
            name = name[: -len(".gz")]
        if self.kind != "hf":
            name = name[: -len(Path(name).suffix)]
        return name


def load_preferences(
    path: str | Path,
    *,
    format: str = "auto",
    source: str | None = None,
    source_column: str = "source",
    drop_duplicates: bool = False,
) -> PreferenceSet:
    """Load and normalise preference pairs from ``path`` (see the module docstring).

    Args:
        path: a data file, a folder of data files, a HF ``datasets`` folder or a payoutsim corpus.
        format: one of ``FORMATS``; ``auto`` detects each file's record format from its first record;
            ``hf-dataset`` requires ``path`` to be a HF ``datasets`` folder.
        source: name every pair's source (overrides columns and file names).
        source_column: the field that names a pair's source. If it is not ``"source"``, it must exist.
        drop_duplicates: drop repeats of a pair (same source, prompt, chosen, rejected), keeping the first;
            otherwise repeats are kept and listed in ``findings``.

    Raises:
        InputError: bad input, naming the file, the line/row and the field.
    """
    check_format(format, file=str(path))
    if source is not None and not source.strip():
        raise InputError("empty source name", file=str(path), field="source")
    if source is not None and (problem := name_problem(source)) is not None:
        raise InputError(f"source name {source!r} {problem}", file=str(path), field="source")
    builder = _Builder(drop_duplicates)
    for item in _inputs(Path(path), format):
        _load_input(item, builder, format=format, source=source, source_column=source_column)
    return builder.result()


def load_corpus_eval_sets(corpus_dir: str | Path) -> dict[str, PreferenceSet]:
    """The held-out evaluation pairs of a payoutsim corpus: objective -> pairs, in file-name order.

    Reads ``corpus_dir/eval/<objective>.jsonl``; a record's ``objective`` field, when present, must equal
    the file's objective. Pairs keep the source their ``source`` field names.
    """
    corpus = Path(corpus_dir)
    eval_dir = corpus / "eval"
    if not (corpus / "manifest.json").is_file():
        raise InputError("not a payoutsim corpus: no manifest.json", file=str(corpus))
    if not eval_dir.is_dir():
        raise InputError("not a payoutsim corpus: no eval/ folder", file=str(corpus))
    items = _folder_inputs(eval_dir)
    out: dict[str, PreferenceSet] = {}
    for item in items:
        builder = _Builder(drop_duplicates=False)
        _load_input(item, builder, format="auto", source=None, source_column="source",
                    expected={"objective": item.stem})
        out[item.stem] = builder.result()
    return out


# ---------------------------------------------------------------- locating inputs


def _classify(path: Path) -> _Input | None:
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[: -len(".gz")]
    kind = _SUFFIXES.get(Path(name).suffix)
    if kind is None or (gz and kind == "parquet"):
        return None
    return _Input(path, kind, gz)


def _is_hf_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in _HF_MARKERS)


def _folder_inputs(folder: Path) -> list[_Input]:
    items = [
        item for child in sorted(folder.iterdir())
        if child.is_file() and not child.name.startswith(".") and (item := _classify(child)) is not None
    ]
    if not items:
        raise InputError(
            "no data files in the folder (expected .jsonl, .json, .csv or .parquet, optionally .gz)",
            file=str(folder),
        )
    return items


def _inputs(path: Path, fmt: str) -> list[_Input]:
    if not path.exists():
        raise InputError("no such file or folder", file=str(path))
    if fmt == "hf-dataset":
        if not (path.is_dir() and _is_hf_dir(path)):
            raise InputError(
                f"not a Hugging Face datasets folder (none of {', '.join(_HF_MARKERS)})",
                file=str(path), field="format",
            )
        return [_Input(path, "hf")]
    if path.is_file():
        item = _classify(path)
        if item is None:
            raise InputError(
                f"unknown file type '{''.join(path.suffixes) or path.name}'; expected .jsonl, .json, .csv or "
                ".parquet (JSON/CSV optionally .gz), a folder of such files, a Hugging Face datasets folder "
                "or a payoutsim corpus",
                file=str(path),
            )
        return [item]
    if (path / "manifest.json").is_file() and (path / "train").is_dir():
        return _folder_inputs(path / "train")
    if _is_hf_dir(path):
        return [_Input(path, "hf")]
    return _folder_inputs(path)


# ---------------------------------------------------------------- reading records


def _read_bytes(item: _Input) -> bytes:
    try:
        if item.gz:
            with gzip.open(item.path, "rb") as fh:
                return fh.read()
        return item.path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputError(f"not a valid gzip file ({err})", file=str(item.path)) from None
    except OSError as err:
        raise InputError(f"cannot read the file ({err.strerror or err})", file=str(item.path)) from None


def _decode(data: bytes, file: str, *, compressed: bool = False) -> str:
    """UTF-8 text of ``data`` (a leading BOM dropped); invalid bytes -> InputError with line and offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1)
        raise InputError(
            f"invalid UTF-8 at byte offset {err.start} of the {'decompressed ' if compressed else ''}file "
            f"(byte {column + 1} of the line): "
            f"{err.reason}",
            file=file, row=f"line {line}",
        ) from None
    return text.removeprefix("\ufeff")


def _json_error(err: json.JSONDecodeError, file: str, line_offset: int = 0) -> InputError:
    return InputError(
        f"malformed JSON: {err.msg} (column {err.colno})", file=file, row=f"line {err.lineno + line_offset}"
    )


def _jsonl_records(text: str, file: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as err:
            raise _json_error(err, file, line_offset=number - 1) from None


def _json_array_records(text: str, file: str) -> Iterator[tuple[str, Any]]:
    """Elements of a top-level JSON list, each located as ``record N (line L)`` (its first line)."""
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, 0).end() + 1  # past "["
    line, counted = 1, 0
    index = 0
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        if index == 0 and text.startswith("]", pos):
            pos += 1
            break
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise _json_error(err, file) from None
        index += 1
        yield f"record {index} (line {line})", value
        pos = _WHITESPACE.match(text, pos).end()
        if text.startswith(",", pos):
            pos += 1
            continue
        if text.startswith("]", pos):
            pos += 1
            break
        err = json.JSONDecodeError("expected ',' or ']' after a list element", text, pos)
        raise _json_error(err, file)
    rest = _WHITESPACE.match(text, pos).end()
    if rest < len(text):
        raise _json_error(json.JSONDecodeError("extra data after the list", text, rest), file)


def _json_records(text: str, file: str) -> Iterator[tuple[str, Any]]:
    start = _WHITESPACE.match(text, 0).end()
    if text.startswith("[", start):
        return _json_array_records(text, file)
    if text.startswith("{", start):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            return _jsonl_records(text, file)  # JSON Lines saved as .json
        if isinstance(whole, dict) and "\n" in text.strip():  # one line: JSON Lines with one record
            raise InputError(
                "expected a JSON list of records (or JSON Lines), got a single object",
                file=file, row=f"line {text.count(chr(10), 0, start) + 1}",
            )
    return _jsonl_records(text, file)


def _csv_records(data: bytes, file: str, compressed: bool) -> Iterator[tuple[str, Any]]:
    import polars as pl

    text = _decode(data, file, compressed=compressed)
    if not text.strip():
        return iter(())
    try:
        frame = pl.read_csv(io.StringIO(text), infer_schema=False, empty_string_is_null=False)
    except (pl.exceptions.PolarsError, ValueError) as err:
        raise InputError(f"malformed CSV: {str(err).splitlines()[0]}", file=file) from None
    return ((f"row {i}", row) for i, row in enumerate(frame.iter_rows(named=True), start=1))


def _parquet_records(item: _Input) -> Iterator[tuple[str, Any]]:
    import polars as pl

    try:
        frame = pl.read_parquet(item.path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as err:
        raise InputError(f"cannot read Parquet: {str(err).splitlines()[0]}", file=str(item.path)) from None
    return ((f"row {i}", row) for i, row in enumerate(frame.iter_rows(named=True), start=1))


def _hf_records(item: _Input) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(item.path))
    except Exception as err:  # datasets raises many kinds; all mean "cannot read this folder"
        raise InputError(f"cannot read the Hugging Face dataset: {err}", file=str(item.path)) from None
    if isinstance(loaded, datasets.DatasetDict):
        for split, part in loaded.items():
            for i, row in enumerate(part, start=1):
                yield f"split '{split}' row {i}", row
    else:
        for i, row in enumerate(loaded, start=1):
            yield f"row {i}", row


def _records(item: _Input) -> tuple[Iterator[tuple[str, Any]], bool]:
    """``(location, record)`` pairs of one input, and whether its cells are untyped text (CSV)."""
    file = str(item.path)
    if item.kind == "hf":
        return _hf_records(item), False
    if item.kind == "parquet":
        return _parquet_records(item), False
    data = _read_bytes(item)
    if item.kind == "csv":
        return _csv_records(data, file, item.gz), True
    text = _decode(data, file, compressed=item.gz)
    if item.kind == "jsonl":
        return _jsonl_records(text, file), False
    return _json_records(text, file), False


# ---------------------------------------------------------------- building the set


class _Builder:
    """Collects pairs, findings and formats; detects duplicates (same source, prompt, chosen, rejected)."""

    def __init__(self, drop_duplicates: bool) -> None:
        self.drop_duplicates = drop_duplicates
        self.pairs: list[PreferencePair] = []
        self.findings: list[Finding] = []
        self.formats: dict[str, str] = {}
        self._first: dict[str, str] = {}

    def add(self, pair: PreferencePair) -> None:
        key = json.dumps([pair.source, pair.prompt, pair.chosen, pair.rejected], ensure_ascii=False,
                         sort_keys=True, separators=(",", ":"))
        first = self._first.get(key)
        if first is None:
            self._first[key] = pair.origin
        elif self.drop_duplicates:
            self.findings.append(Finding("duplicate-dropped", f"duplicate of the pair at {first}; dropped",
                                         pair.source, (first, pair.origin)))
            return
        else:
            self.findings.append(Finding(
                "duplicate", f"duplicate of the pair at {first}; kept twice (drop with --drop-duplicates)",
                pair.source, (first, pair.origin),
            ))
        self.pairs.append(pair)

    def result(self) -> PreferenceSet:
        return PreferenceSet(self.pairs, self.findings, self.formats)


def _load_input(
    item: _Input,
    builder: _Builder,
    *,
    format: str,
    source: str | None,
    source_column: str,
    expected: Mapping[str, str] | None = None,
) -> None:
    file = str(item.path)
    records, text_cells = _records(item)
    fmt: str | None = None
    use_column = False
    count = 0
    for location, record in records:
        ctx = RecordContext(file, location, text_cells)
        if not isinstance(record, Mapping):
            raise ctx.error(f"expected an object (a record with named fields), got {type(record).__name__}")
        if fmt is None:  # first record decides the format and where sources come from
            fmt = detect_format(record, ctx) if format in ("auto", "hf-dataset") else format
            builder.formats[file] = fmt
            use_column = source is None and source_column in record
            if source is None and not use_column and source_column != "source":
                raise ctx.error("missing source column", field=source_column)
        for key, want in (expected or {}).items():
            if key in record and record[key] != want:
                raise ctx.error(f"expected {want!r} (the file's name), got {record[key]!r}", field=key)
        parsed = parse_record(fmt, record, ctx)
        name = source if source is not None else item.stem
        if use_column:
            if source_column not in record:
                raise ctx.error("missing field (the first record names its source here)", field=source_column)
            name = record[source_column]
            if name is None and text_cells:
                name = ""
            if not isinstance(name, str):
                raise ctx.error(f"expected a source name (text), got {name!r}", field=source_column)
            if not name.strip():
                raise ctx.error("empty source name", field=source_column)
            if (problem := name_problem(name)) is not None:
                raise ctx.error(f"source name {name!r} {problem}", field=source_column)
        elif source is None and count == 0 and (problem := name_problem(name)) is not None:
            raise InputError(f"the file name gives the source name {name!r}, which {problem}", file=file)
        origin = f"{item.path.name}:{location}"
        for kind, message in parsed.findings:
            builder.findings.append(Finding(kind, message, name, (origin,)))
        builder.add(PreferencePair(name, parsed.prompt, parsed.chosen, parsed.rejected, parsed.labels, origin))
        count += 1
    if count == 0:
        first = "line 1" if item.kind in ("json", "jsonl") else "row 1"
        raise InputError(f"empty source '{source or item.stem}': no preference pairs in the file",
                         file=file, row=first)
