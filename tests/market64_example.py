"""A 64-member market without any model: a seeded synthetic `PairGame` recorded in a ledger.

`synthetic_pair_game` draws per-pair margins Δ_k ``[64, pairs]`` (a per-source quality times a per-pair
difficulty, plus noise; some sources hurt the second objective), `write_market64` writes that game
(``game.npz``, `PairGame.save`) and a 64-member scenario (one source per member, two periods) next to it,
and `market64_inputs` builds the `ScenarioInputs` whose game is the `PairGame` itself (not a 2^64 table:
`market.scenario.inputs.load_inputs` reads tables only). `record_market64` pays both periods with
`market.period.run_period` and records them with `market.ledger.record_run`: above 16 members the ledger
keeps the compact game instead of the coalition table.

Used by the dashboard tests (AppTest and the real browser) and the ledger tests.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np

from market import ledger
from market.period import run_period
from market.scenario.inputs import ScenarioInputs, check_game, scenario_hash
from market.scenario.schema import load_scenario
from valuation.coalition_utility.compact import PairGame

MEMBERS = 64
PAIRS = 100
OBJECTIVES = ("helpfulness", "harmlessness")
PERIODS = ("2026-Q1", "2026-Q2")
#: The payout's regression budget (evaluations): the default 1000·n takes minutes at n = 64 on 2 cores.
BUDGET = 2000
#: Replicate payouts of the estimator's noise (each one a payout: kept few so the fixture builds in seconds).
REPLICATES = 8


def member_name(j: int) -> str:
    return f"m{j:02d}"


def synthetic_pair_game(n: int = MEMBERS, pairs: int = PAIRS, *, seed: int = 0) -> PairGame:
    """A seeded ``sum``-weighted, ``bt`` `PairGame` of `n` sources ``s00 …`` on two objectives.

    ``Δ_k[ℓ, i] = q_kℓ · d_ki + 0.05 · noise``: source quality q (helpfulness mostly positive; a quarter
    of the sources hurt harmlessness) times a positive pair difficulty d, so coalitions' utilities differ
    and the member values are spread."""
    rng = np.random.default_rng(seed)
    quality = np.stack([rng.uniform(-0.02, 0.2, n), rng.uniform(-0.12, 0.12, n)])
    deltas = [
        quality[k][:, None] * rng.uniform(0.2, 1.5, (1, pairs)) + 0.05 * rng.normal(size=(n, pairs))
        for k in range(len(OBJECTIVES))
    ]
    return PairGame([f"s{j:02d}" for j in range(n)], OBJECTIVES, deltas, weighting="sum", metric="bt")


def write_market64(
    folder: Path, *, n: int = MEMBERS, seed: int = 0, rule: str = "shapley", budget: int = BUDGET,
    replicates: int = REPLICATES,
) -> Path:
    """Write ``game.npz`` and ``scenario.toml`` (n one-source members, two periods) to `folder`; return
    the scenario's path. The scenario's ``utilities`` names the game file (its hash enters the scenario
    hash); `market64_inputs` reads it as a `PairGame`."""
    folder.mkdir(parents=True, exist_ok=True)
    synthetic_pair_game(n, seed=seed).save(folder / "game.npz")
    members = "".join(f'[[members]]\nname = "{member_name(j)}"\nsources = ["s{j:02d}"]\n\n' for j in range(n))
    text = textwrap.dedent(
        f"""\
        [market]
        name = "market{n}"
        currency = "EUR"
        revenue = "120000.00"
        platform_fee = 0.05
        rule = "{rule}"

        [objectives]
        helpfulness = 0.6
        harmlessness = 0.4

        [valuation]
        utilities = "game.npz"
        seed = 0
        budget = {budget}

        [uncertainty]
        replicates = {replicates}

        [[periods]]
        name = "{PERIODS[0]}"

        [[periods]]
        name = "{PERIODS[1]}"
        revenue = "150000.00"

        """
    )
    path = folder / "scenario.toml"
    path.write_text(text + members, encoding="utf-8")
    return path


def market64_inputs(scenario: Path) -> ScenarioInputs:
    """`ScenarioInputs` of a `write_market64` scenario whose game is its `PairGame` (checked against the
    scenario as a table would be: `market.scenario.inputs.check_game`)."""
    loaded = load_scenario(scenario)
    game_path = loaded.resolve("game.npz")
    game = PairGame.load(game_path)
    check_game(loaded, game, game_path.name)  # type: ignore[arg-type]  # any Game with players/objectives
    hashes = {"utilities": hashlib.sha256(game_path.read_bytes()).hexdigest()}
    return ScenarioInputs(
        loaded=loaded,
        game=game,  # type: ignore[arg-type]  # ScenarioInputs.game is being widened to Game
        sizes=None,
        texts=None,
        scenario_sha256=scenario_hash(loaded.file_sha256, hashes),
        input_hashes=hashes,
    )


def record_market64(folder: Path, ledger_path: Path, *, n: int = MEMBERS, seed: int = 0) -> list[str]:
    """Write the market (`write_market64`), pay both periods and record them in `ledger_path`; return the
    run ids in recording order."""
    inputs = market64_inputs(write_market64(folder, n=n, seed=seed))
    return [ledger.record_run(ledger_path, inputs, run_period(inputs, p)).run_id for p in PERIODS]
