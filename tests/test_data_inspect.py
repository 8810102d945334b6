"""`payoutsim data inspect`: reports on real and fixture data; every bad-input case exits 2 naming file,
line/row and field."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from market.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["data", "inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


def line(record: object) -> str:
    return json.dumps(record, ensure_ascii=False)


GOOD = line({"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."})


# ---------------------------------------------------------------- acceptance on real data


def test_inspect_hh_rlhf_real_data(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"))
    assert code == 0, err
    assert "2,312 pairs in 1 source (format: hh-rlhf)" in out
    assert "warning: hh-prefix" in out and "line 1255" in out  # the dialogue repaired, not silently
    assert "warning: empty-turn" in out


def test_inspect_dpo_en_demo_real_data(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(shared_data / "dpo-en-demo.json"))
    assert code == 0, err
    assert "300 pairs in 1 source (format: sharegpt)" in out
    assert out.count("warning: duplicate:") == 5  # repeats are kept, never silently
    code, out, _ = run(capsys, str(shared_data / "dpo-en-demo.json"), "--drop-duplicates", "--json")
    report = json.loads(out)
    assert (report["total_pairs"], report["sources"][0]["dropped_duplicates"]) == (295, 5)


# ---------------------------------------------------------------- normal reports


def test_inspect_table_and_findings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(FIXTURES / "columns.jsonl"))
    assert code == 0
    assert "4 pairs in 2 sources (format: columns)" in out
    assert "alpha" in out and "beta" in out
    assert "warning: duplicate: duplicate of the pair at columns.jsonl:line 1" in out


def test_inspect_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(FIXTURES / "columns.jsonl"), "--json")
    assert code == 0
    report = json.loads(out)
    alpha, beta = report["sources"]
    assert (alpha["source"], alpha["pairs"], alpha["text_prompts"], alpha["duplicates"]) == ("alpha", 3, 3, 1)
    assert (beta["chat_prompts"], beta["mean_chosen_chars"]) == (1, 1.0)
    assert alpha["labels"] == ["harmlessness", "helpfulness"]
    assert report["findings"][0]["locations"] == ["columns.jsonl:line 1", "columns.jsonl:line 4"]


def test_inspect_source_column_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text(line({"owner": "acme", "prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    code, out, _ = run(capsys, str(path), "--source-column", "owner", "--json")
    assert code == 0 and json.loads(out)["sources"][0]["source"] == "acme"


# ---------------------------------------------------------------- bad input -> exit 2


def write(name: str, content: str | bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path
    return make


BAD_PREFIX = b'{"prompt": "caf'
BAD_CASES = {
    # id: (make file, extra args, expected row, expected field or None, words in the message)
    "missing field": (write("d.jsonl", GOOD + "\n" + line({"prompt": "x", "chosen": "y"}) + "\n"),
                      [], "line 2", "rejected", "missing field"),
    "empty prompt": (write("d.jsonl", line({"prompt": "  ", "chosen": "y", "rejected": "z"}) + "\n"),
                     [], "line 1", "prompt", "empty prompt"),
    "empty response": (write("d.jsonl", GOOD + "\n" + line({"prompt": "x", "chosen": "", "rejected": "z"})),
                       [], "line 2", "chosen", "empty response"),
    "chosen identical to rejected": (write("d.jsonl", line({"prompt": "x", "chosen": "same ", "rejected": "same"})),
                                     [], "line 1", "rejected", "identical"),
    "wrong type": (write("d.jsonl", line({"prompt": "x", "chosen": 42, "rejected": "z"})),
                   [], "line 1", "chosen", "got a number (42)"),
    "wrong type in messages": (write("d.jsonl", line({"prompt": [{"role": "user", "content": 7}],
                                                       "chosen": "a", "rejected": "b"})),
                               [], "line 1", "prompt[1].content", "expected message content"),
    "invalid utf-8": (write("d.jsonl", (GOOD + "\n" + GOOD + "\n").encode() + BAD_PREFIX + b'\xe9"}\n'),
                      [], "line 3", None,
                      f"invalid UTF-8 at byte offset {2 * (len(GOOD) + 1) + len(BAD_PREFIX)} of the file "
                      f"(byte {len(BAD_PREFIX) + 1} of the line)"),
    "invalid utf-8 in json list": (write("d.json", b'[\n' + GOOD.encode() + b',\n{"prompt": "\xff"}]'),
                                   [], "line 3", None, "invalid UTF-8"),
    "invalid utf-8 in csv": (write("d.csv", b"prompt,chosen,rejected\na,b,c\nd,\xc3(,f\n"),
                             [], "line 3", None, "invalid UTF-8"),
    "malformed json line": (write("d.jsonl", GOOD + "\n" + '{"prompt": "x", "chosen": \n'),
                            [], "line 2", None, "malformed JSON"),
    "malformed json list": (write("d.json", "[\n" + GOOD + ",\n" + GOOD + "\n" + GOOD + "\n]"),
                            [], "line 4", None, "malformed JSON"),
    "single json object": (write("d.json", "{\n" + GOOD[1:]), [], "line 1", None, "got a single object"),
    "record is not an object": (write("d.jsonl", GOOD + "\n[1, 2]\n"), [], "line 2", None, "expected an object"),
    "empty source file": (write("d.jsonl", "\n\n"), [], "line 1", None, "empty source 'd'"),
    "empty source csv": (write("d.csv", "prompt,chosen,rejected\n"), [], "row 1", None, "empty source 'd'"),
    "empty source name": (write("d.jsonl", line({"source": "a", "prompt": "x", "chosen": "y", "rejected": "z"})
                                + "\n" + line({"source": "", "prompt": "x", "chosen": "y", "rejected": "z"})),
                          [], "line 2", "source", "empty source name"),
    "missing source value": (write("d.jsonl", line({"source": "a", "prompt": "x", "chosen": "y", "rejected": "z"})
                                   + "\n" + GOOD), [], "line 2", "source", "missing field"),
    "unknown format option": (write("d.jsonl", GOOD), ["--format", "alpaca"], None, "format",
                              "unknown format 'alpaca'; formats: auto, columns, ultrafeedback, hh-rlhf, sharegpt"),
    "undetectable record format": (write("d.jsonl", line({"instruction": "x", "output": "y"})),
                                   [], "line 1", None, "cannot detect the record format"),
    "unknown file type": (write("d.txt", GOOD), [], None, None, "unknown file type '.txt'"),
    "hh-rlhf without shared prompt": (
        write("hh.jsonl", line({"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"})),
        [], "line 1", "rejected", "do not share a prompt"),
    "hh-rlhf without assistant turn": (write("hh.jsonl", line({"chosen": "\n\nHuman: A", "rejected": "\n\nHuman: B"})),
                                       [], "line 1", "chosen", "no 'Assistant:' turn"),
    "ultrafeedback last message not assistant": (
        write("u.jsonl", line({"chosen": [{"role": "user", "content": "q"}],
                               "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})),
        [], "line 1", "chosen[1].role", "must be the assistant's response"),
    "ultrafeedback different prompts": (
        write("u.jsonl", line({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                               "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "b"}]})),
        [], "line 1", "rejected", "do not share the same prompt"),
    "sharegpt unknown speaker": (
        write("s.json", "[\n" + line({"conversations": [{"from": "bot", "value": "q"}],
                                      "chosen": {"from": "gpt", "value": "a"},
                                      "rejected": {"from": "gpt", "value": "b"}}) + "\n]"),
        [], "record 1 (line 2)", "conversations[1].from", "unknown speaker 'bot'"),
    "sharegpt empty response": (
        write("s.json", "[\n" + line({"conversations": [{"from": "human", "value": "q"}],
                                      "chosen": {"from": "gpt", "value": " "},
                                      "rejected": {"from": "gpt", "value": "b"}}) + "\n]"),
        [], "record 1 (line 2)", "chosen.value", "empty response"),
    "label not a number": (write("d.csv", "prompt,chosen,rejected,label_helpfulness\na,b,c,high\n"),
                           [], "row 1", "label_helpfulness", "expected a number"),
    "bad gzip": (write("d.jsonl.gz", b"not gzip at all"), [], None, None, "not a valid gzip file"),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_input_exits_2_naming_file_row_and_field(case: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    make, args, row, field, words = BAD_CASES[case]
    path = make(tmp_path)
    code, out, err = run(capsys, str(path), *args)
    assert code == 2, (out, err)
    assert err.startswith(f"error: {path}: "), err
    if row is not None:
        assert f"{path}: {row}: " in err, err
    if field is not None:
        assert f"field '{field}'" in err, err
    assert words in err, err
    assert err.count("\n") == 1  # one line, no traceback


def test_empty_source_in_a_folder_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.jsonl").write_text(GOOD + "\n")
    (tmp_path / "b.jsonl").write_text("")
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2
    assert f"error: {tmp_path / 'b.jsonl'}: line 1: empty source 'b'" in err


def test_invalid_utf8_in_gzip_names_line_and_decompressed_offset(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(GOOD.encode() + b"\n" + b'{"prompt": "\x80"}\n'))
    code, _, err = run(capsys, str(path))
    assert code == 2
    assert f"{path}: line 2: invalid UTF-8 at byte offset {len(GOOD) + 13} of the decompressed file" in err


def test_missing_path_and_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file or folder" in err
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2 and f"{tmp_path}: no data files in the folder" in err
