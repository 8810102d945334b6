"""Real-browser test of the dashboard: `payoutsim dashboard` driven by Playwright on Debian's Chromium.

Starts the server on a free 127.0.0.1 port with a ledger built from the bundled example with its eval
items (`uncertain_example`: the example's payouts, recorded with their uncertainty), waits for the charts,
checks the payouts page shows each amount's 95% interval (table, error bars, rank confidence), moves the
objective-weight slider with the keyboard, checks a payout changed and the recorded interval is no longer
shown for the new weights, downloads the CSV and checks its content, and saves screenshots under the
test's tmp folder (and one copy at /tmp/dashboard-screenshot.png). A second test serves the 64-member
market (`market64_example`: a synthetic PairGame, the compact game in the ledger), opens every page, checks
each one shows its heading and charts and no exception, and moves the weight slider and leaves members out
of the what-if pool. Skipped only when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from market64_example import record_market64
from uncertain_example import write_uncertain_example

from market import read_model
from market.cli import main
from market.money import format_minor

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 60
WAIT_MS = 30_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's Chromium is not installed at {CHROMIUM} "
                       "(`apt-get install chromium`; `make test` installs it in CI)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payoutsim() -> list[str]:
    script = Path(sys.executable).parent / "payoutsim"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from market.cli import run; run()"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`payoutsim dashboard` on the example with its uncertainty; yields the base URL."""
    ledger = tmp_path / "ledger.duckdb"
    assert main(["payout", str(write_uncertain_example(tmp_path / "example")), "--ledger", str(ledger)]) == 0
    with _serve(ledger, tmp_path) as url:
        yield url


@pytest.fixture
def server64(tmp_path: Path) -> Iterator[str]:
    """`payoutsim dashboard` on the 64-member market (two periods); yields the base URL."""
    ledger = tmp_path / "ledger.duckdb"
    record_market64(tmp_path / "market64", ledger)
    with _serve(ledger, tmp_path) as url:
        yield url


@contextlib.contextmanager
def _serve(ledger: Path, tmp_path: Path) -> Iterator[str]:
    """`payoutsim dashboard --ledger LEDGER --port <free>`; yields the base URL; always killed afterwards."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [*_payoutsim(), "dashboard", "--ledger", str(ledger), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dashboard server exited with {proc.returncode}: {(tmp_path / 'server.log').read_text()}")
            try:
                with opener.open(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dashboard did not answer within {SERVER_START_S} s: {(tmp_path / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _payout_cells(page, column: str = "amount (") -> dict[str, str]:
    """member -> the text of the first column whose header starts with `column` (default: the amount) from
    the trade-offs page's payout table (an HTML table)."""
    table = page.locator('[data-testid="stTable"] table').first
    table.wait_for()
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    col = next(i for i, h in enumerate(headers) if h.startswith(column))
    out = {}
    for row in table.locator("tbody tr").all():
        cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
        out[cells[0]] = cells[col]
    return out


def _recorded_intervals(tmp_path: Path) -> dict[str, str]:
    """member -> ``"lo – hi"`` of the newest run's recorded 95% amount interval (read_model)."""
    ledger = tmp_path / "ledger.duckdb"
    run = read_model.load_run(ledger, read_model.runs(ledger)[-1].run_id)
    assert run.uncertainty is not None
    unc = run.uncertainty
    return {
        m: f"{format_minor(lo, run.currency)} – {format_minor(hi, run.currency)}"
        for m, lo, hi in zip(run.members, unc.amount_lo, unc.amount_hi, strict=True)
    }


def test_dashboard_in_a_real_browser(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    intervals = _recorded_intervals(tmp_path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, timeout=WAIT_MS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        page.set_default_timeout(WAIT_MS)
        try:

            # Payouts: the table and the bar chart
            page.goto(server, wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Payouts", exact=True)).to_be_visible()
            page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').first.wait_for()
            expect(page.get_by_text("equals the pool")).to_be_visible()
            # ... with the uncertainty: the interval column (the data grid draws on a canvas; its hidden
            # accessible grid carries the cells' text), what was resampled, the rank-confidence view
            grid = page.locator('[data-testid="stDataFrame"]').first
            expect(grid.get_by_role("columnheader", name="95% interval", include_hidden=True)).to_be_attached()
            for text in intervals.values():
                expect(grid.get_by_role("gridcell", name=text, exact=True, include_hidden=True)).to_be_attached()
            expect(page.get_by_text("95% intervals from 200 replicate payouts")).to_be_visible()
            expect(page.get_by_role("heading", name="Rank confidence")).to_be_visible()
            expect(page.get_by_text("Not resolved")).to_contain_text("alice and bob")
            expect(page.locator('[data-testid="stVegaLiteChart"]')).to_have_count(2)  # bars with error bars, heatmap
            page.screenshot(path=str(tmp_path / "payouts.png"), full_page=True)

            # Trade-offs: charts, slider, payouts change
            page.goto(f"{server}/trade_offs", wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Trade-offs between objectives", exact=True)).to_be_visible()
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            expect(charts).to_have_count(2)
            charts.last.locator("canvas, svg").first.wait_for()
            expect(page.get_by_text("Payouts at helpfulness = 0.50")).to_be_visible()
            expect(page.get_by_text("95% intervals on both axes")).to_be_visible()
            before = _payout_cells(page)
            assert set(before) == {"alice", "bob", "carol", "dave"}
            assert _payout_cells(page, "95% interval") == intervals  # the recorded weights: the recorded intervals
            # Streamlit's slider: a visually hidden, focusable input[type=range] (older builds: a
            # [role=slider] thumb), driven by the keyboard
            slider = page.locator('[data-testid="stSlider"]').first
            thumb = slider.locator('input[type="range"], [role="slider"]').first
            expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text("0.50")
            thumb.focus()
            for _ in range(4):
                thumb.press("ArrowRight")
            expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text("0.70")
            expect(page.get_by_text("Payouts at helpfulness = 0.70")).to_be_visible()
            deadline = time.monotonic() + 15  # the table follows the heading in the same rerun
            while (after := _payout_cells(page)) == before and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert after != before
            assert float(after["alice"]) > float(before["alice"])  # alice's data is mostly helpful
            expect(page.get_by_text("No interval for these weights")).to_be_visible()  # not the stale one
            shot = tmp_path / "trade_offs.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, "/tmp/dashboard-screenshot.png")

            # Ledger: download the CSV
            page.goto(f"{server}/ledger", wait_until="domcontentloaded")
            button = page.get_by_role("button", name="Download CSV")
            expect(button).to_be_visible()
            with page.expect_download(timeout=WAIT_MS) as info:
                button.click()
            download = info.value
            target = tmp_path / "payouts.csv"
            download.save_as(str(target))
            rows = list(csv.DictReader(io.StringIO(target.read_text())))
            assert len(rows) == 3 + 4 + 4
            assert {r["member"] for r in rows} == {"alice", "bob", "carol", "dave"}
            q3 = {r["member"]: r["amount"] for r in rows if r["period"] == "2025-Q3"}
            assert sum(round(float(v) * 100) for v in q3.values()) == 10_800_000
            assert q3["dave"] == "0.00"
            page.screenshot(path=str(tmp_path / "ledger.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


#: (URL path, heading, has a chart) of every page.
PAGES_64 = (
    ("", "Payouts", True),
    ("trade_offs", "Trade-offs between objectives", True),
    ("pooling", "Pooling what-if", False),
    ("coalitions", "Coalitions", True),
    ("ledger", "Ledger", False),
)


def _no_exception(page) -> None:
    """No Streamlit exception box and no Python traceback text on the page."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    expect(page.get_by_text("Traceback (most recent call last)")).to_have_count(0)


def test_dashboard_with_64_members_in_a_real_browser(server64: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, timeout=WAIT_MS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(WAIT_MS)
        try:
            for path, heading, chart in PAGES_64:
                page.goto(f"{server64}/{path}", wait_until="domcontentloaded")
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
                # a table on every page (on the coalitions page inside collapsed expanders: attached, not visible)
                page.locator('[data-testid="stDataFrame"], [data-testid="stTable"]').first.wait_for(state="attached")
                if chart:
                    page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').first.wait_for()
                _no_exception(page)
                page.screenshot(path=str(tmp_path / f"market64-{path or 'payouts'}.png"), full_page=True)
            # the coalitions are sampled, and say so
            page.goto(f"{server64}/coalitions", wait_until="domcontentloaded")
            expect(page.get_by_text("sampled, not all 2^64")).to_be_visible()
            expect(page.get_by_text("Estimated Shapley value of m00")).to_be_visible()
            _no_exception(page)
            # trade-offs: move the slider; the table of the top 12 follows
            page.goto(f"{server64}/trade_offs", wait_until="domcontentloaded")
            expect(page.get_by_text("Payouts at helpfulness = 0.60")).to_be_visible()
            thumb = page.locator('[data-testid="stSlider"]').first.locator('input[type="range"], [role="slider"]').first
            thumb.focus()
            thumb.press("ArrowRight")
            expect(page.get_by_text("Payouts at helpfulness = 0.65")).to_be_visible()
            expect(page.locator('[data-testid="stTable"] tbody tr')).to_have_count(12)
            _no_exception(page)
            # pooling: leave a member out; the what-if is sampled from the compact game
            page.goto(f"{server64}/pooling", wait_until="domcontentloaded")
            expect(page.get_by_text("the recorded payout")).to_be_visible()
            box = page.locator('[data-testid="stMultiSelect"]').first
            box.click()
            page.get_by_role("option", name="m03", exact=True).click()
            page.keyboard.press("Escape")
            expect(page.get_by_text("sampled estimator")).to_be_visible()
            expect(page.get_by_text("only individual rationality")).to_be_visible()
            _no_exception(page)
            page.screenshot(path=str(tmp_path / "market64-pooling-what-if.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
