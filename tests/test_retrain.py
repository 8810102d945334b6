"""The retraining baseline (`valuation.retraining.run`) and the weight-level merge (`valuation.adapters.merge`) on a very
small `tiny` model: the trl "ref" pitfall, prefix reuse, `payoutsim value --mode retrain` outputs, fidelity
metrics on hand-made games, and the `cat` merge of a singleton."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_lm import TINY_PRESET_TOML as TINY_TOML

from market.cli import main
from valuation.adapters.config import TrainingConfig
from valuation.adapters.merge import merged_coalition_logprobs
from valuation.adapters.store import load_adapter_record
from valuation.composition.logprobs import compute_eval_logprobs, score_pairs
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.game import TableGame
from valuation.models import load_base_model
from valuation.pipeline.config import load_valuation_config
from valuation.pipeline.inputs import prepare_inputs
from valuation.pipeline.run import run_train
from valuation.retraining.fidelity import fidelity_metrics, shapley_fidelity, utility_fidelity
from valuation.retraining.plan import plan_retrain, random_orders, restrict
from valuation.retraining.run import run_retrain
from valuation.retraining.stages import train_stage
from valuation.synth import SynthConfig, write_corpus

SOURCES = ["flan_v2_niv2", "sharegpt", "noisy"]
OBJECTIVES = ("helpfulness", "harmlessness")


def write_config(
    folder: Path, corpus: Path, cache: Path, *, extra: str = "", sources: list[str] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    path.write_text(
        f"""
[data]
corpus = "{corpus}"
sources = {json.dumps(sources or SOURCES)}
[model]
base = "tiny"
cache_dir = "{cache}"
{TINY_TOML}
[training]
epochs = 1
batch_size = 8
max_length = 96
[eval]
max_pairs = 8
[retrain]
orders = 2
seed = 0
{extra}
[output]
dir = "run"
""",
        encoding="utf-8",
    )
    return path


# ---------------------------------------------------------------------------------------------------
# pure parts: orders, plan, fidelity


def test_orders_are_seeded_permutations_and_restrict_keeps_their_order() -> None:
    orders = random_orders(SOURCES, 4, seed=3)
    assert orders == random_orders(SOURCES, 4, seed=3)
    assert orders != random_orders(SOURCES, 4, seed=4)
    assert all(sorted(o) == sorted(SOURCES) for o in orders)
    assert restrict(("c", "a", "d", "b"), ["a", "b", "c"]) == ("c", "a", "b")


def test_plan_trains_each_shared_prefix_once() -> None:
    plan = plan_retrain(["a", "b", "c", "d"], [("a", "b", "c", "d"), ("d", "c", "b", "a")])
    assert len(plan.coalitions) == 11  # every coalition with |S| >= 2
    assert plan.sequences[("a", "b", "c")] == (("a", "b", "c"), ("c", "b", "a"))
    # one stage per distinct sequence: (a,b) is shared by {a,b}, {a,b,c}, {a,b,d}, {a,b,c,d} in order 1
    assert len(plan.stages) == len(set(plan.stages)) == 2 * 11
    assert plan.stages_without_prefix_reuse() == 2 * (6 * 1 + 4 * 2 + 1 * 3)
    seen: set[tuple[str, ...]] = set()
    for stage in plan.stages:  # parents come first (or are per-source adapters)
        assert len(stage) == 2 or stage[:-1] in seen
        seen.add(stage)
    same = plan_retrain(["a", "b", "c"], [("a", "b", "c"), ("a", "b", "c")])
    assert len(same.stages) == 4  # a repeated order trains nothing new


def test_fidelity_metrics_on_a_hand_made_pair_of_games() -> None:
    """Two additive games u(S) = Σ_{i∈S} w_i: exact Shapley gives φ = w, so every figure is known."""
    players = ["a", "b", "c"]
    masks = all_coalitions(3)
    w_ref = np.array([[0.1, 1.0], [-0.2, 2.0], [0.3, 3.0]])
    w_other = np.array([[0.3, 2.0], [0.1, 4.0], [0.2, 6.0]])
    ref_u, other_u = masks @ w_ref + 0.5, masks @ w_other + 0.5
    phi_ref = approximate(TableGame(players, ("x", "y"), masks, ref_u), "exact").values
    phi_other = approximate(TableGame(players, ("x", "y"), masks, other_u), "exact").values
    assert np.allclose(phi_ref, w_ref) and np.allclose(phi_other, w_other)

    report = fidelity_metrics(("x", "y"), masks.sum(axis=1), ref_u, phi_ref, other_u, phi_other)
    x, y = report["x"], report["y"]
    nonempty = masks.sum(axis=1) >= 1
    assert x["utility_pearson"] == pytest.approx(np.corrcoef(ref_u[nonempty, 0], other_u[nonempty, 0])[0, 1])
    assert x["utility_max_abs_diff"] == pytest.approx(np.abs(ref_u - other_u)[:, 0].max())
    assert x["shapley_spearman"] == pytest.approx(0.5)  # ranks (2,1,3) vs (3,1,2): 1 − 6·2/24
    assert x["shapley_max_abs_diff"] == pytest.approx(0.3)
    assert x["shapley_sign_agreement"] == pytest.approx(2 / 3)
    # objective y: the other game is exactly 2× the reference (plus a constant) → perfect agreement in shape
    assert y["utility_pearson"] == pytest.approx(1.0)
    assert y["utility_pearson_multi"] == pytest.approx(1.0)
    assert y["shapley_spearman"] == pytest.approx(1.0)
    assert y["shapley_max_abs_diff"] == pytest.approx(3.0)
    assert y["shapley_sign_agreement"] == 1.0


def test_fidelity_of_a_constant_column_is_undefined_not_nan() -> None:
    sizes = np.array([0, 1, 1, 2])
    out = utility_fidelity(np.array([0.5, 0.6, 0.6, 0.6]), np.array([0.5, 0.7, 0.8, 0.9]), sizes)
    assert out["utility_pearson"] is None and out["utility_pearson_multi"] is None
    assert out["utility_max_abs_diff"] == pytest.approx(0.3)
    assert shapley_fidelity(np.array([0.0, 0.0]), np.array([0.1, -0.1]))["shapley_spearman"] is None


# ---------------------------------------------------------------------------------------------------
# with a tiny model


@dataclass
class Env:
    root: Path
    corpus: Path
    cache: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("retrain")
    write_corpus(root / "corpus", SynthConfig(seed=1, pairs_per_source=16, eval_pairs_per_objective=8))
    return Env(root, root / "corpus", root / "cache")


def _counter(starts: list[int]) -> Any:
    from transformers import TrainerCallback

    class Count(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            starts.append(1)

    return Count()


@dataclass
class Retrained:
    folder: Path
    run: Path
    trainings_first: int
    plan: Any
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def retrained(env: Env) -> Retrained:
    """`run_retrain` once (counting trainings), then `payoutsim value --mode retrain` again via the CLI."""
    folder = env.root / "cfg"
    config = load_valuation_config(write_config(folder, env.corpus, env.cache))
    run_train(config, progress=False, log=lambda _m: None)  # the per-source adapters, not counted below
    starts: list[int] = []
    run_retrain(config, progress=False, callbacks=[_counter(starts)], log=lambda _m: None)
    plan = plan_retrain(SOURCES, random_orders(SOURCES, 2, 0))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["value", str(folder / "valuation.toml"), "--mode", "retrain", "--no-progress"])
    assert code == 0, err.getvalue()
    return Retrained(folder, folder / "run", len(starts), plan, out.getvalue(), err.getvalue())


def test_prefix_reuse_trains_each_stage_once_and_a_rerun_trains_nothing(retrained: Retrained) -> None:
    plan = retrained.plan
    assert retrained.trainings_first == len(plan.stages) + len(plan.unions)
    assert len(plan.stages) < plan.stages_without_prefix_reuse()  # {a,b,c} reused its order's 2-prefix
    assert len(list((retrained.run / "retrain" / "sequential").iterdir())) == len(plan.stages)
    assert len(list((retrained.run / "retrain" / "union").iterdir())) == len(plan.unions) == 4
    fidelity = json.loads((retrained.run / "fidelity.json").read_text())
    cost = fidelity["cost"]
    assert cost["sequential"]["fine_tunings_trained_this_run"] == 0  # the CLI run reused everything
    assert cost["sequential"]["fine_tunings"] == len(SOURCES) + len(plan.stages)
    assert cost["union"]["fine_tunings"] == len(SOURCES) + 4
    assert cost["arithmetic"]["fine_tunings"] == len(SOURCES)
    assert "up to date (reused)" in retrained.stderr


def test_stage_adapters_hold_only_the_intended_adapter_and_trained_against_the_base(retrained: Retrained) -> None:
    from safetensors import safe_open

    for stage in (retrained.run / "retrain" / "sequential").iterdir():
        names = {p.name for p in stage.iterdir()}
        assert names <= {"adapter_config.json", "adapter_model.safetensors", "manifest.json", "README.md"}, names
        with safe_open(str(stage / "adapter_model.safetensors"), "pt") as fh:
            keys = list(fh.keys())
        assert keys and not [k for k in keys if ".ref." in k or ".default." in k]
        manifest = json.loads((stage / "manifest.json").read_text())
        # the reference is the base, not the parent stage: a copy of the parent gives log 2 to float precision
        assert abs(manifest["metrics"]["first_loss"] - math.log(2)) > 1e-5, manifest["metrics"]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft loading a model, in the test itself
def test_continued_stage_uses_the_base_as_reference(env: Env, retrained: Retrained, tmp_path: Path) -> None:
    """On the first step the policy is the parent adapter, so trl's logged rewards must equal
    β·mean(log π_parent − log π₀) over the batch (one batch = all pairs) — not 0 as with a "ref" copy."""
    from transformers import TrainerCallback

    prepared = prepare_inputs(load_valuation_config(retrained.folder / "valuation.toml"), progress=False)
    parent = retrained.run / "adapters" / "flan_v2_niv2"
    pairs = prepared.train["sharegpt"]
    config = TrainingConfig(epochs=1, batch_size=len(pairs), max_length=96, seed=0)
    captured: list[dict[str, float]] = []

    class Grab(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            captured.append(dict(logs or {}))

    manifest = train_stage(prepared.base, parent, "sharegpt", pairs, config=config, out_dir=tmp_path / "stage",
                           callbacks=[Grab()])
    first = next(entry for entry in captured if "rewards/chosen" in entry)
    assert abs(first["loss"] - math.log(2)) > 1e-3
    from peft import PeftModel

    model, tokenizer = load_base_model(prepared.base)
    base_scores = score_pairs(model, tokenizer, pairs, max_length=96)
    parent_scores = score_pairs(PeftModel.from_pretrained(model, str(parent)), tokenizer, pairs, max_length=96)
    beta = config.beta
    assert first["rewards/chosen"] == pytest.approx(beta * (parent_scores.chosen - base_scores.chosen).mean(), rel=1e-3)
    assert first["rewards/rejected"] == pytest.approx(
        beta * (parent_scores.rejected - base_scores.rejected).mean(), rel=1e-3
    )
    assert first["rewards/chosen"] != 0.0
    assert manifest["parent"] == str(parent)
    assert not (tmp_path / "stage" / "ref").exists()


def test_mode_retrain_writes_the_documented_files_and_columns(retrained: Retrained) -> None:
    import polars as pl

    run = retrained.run
    for name in ("game_retrain_sequential.csv", "game_retrain_union.csv", "game_merge_cat.csv"):
        game = TableGame.from_csv(run / name, players=SOURCES)
        assert game.objectives == OBJECTIVES and game.is_complete()
        dense = game.dense_table()
        assert np.allclose(dense[0], 0.5)  # ∅ is the base model
    for name in ("values_retrain_sequential.json", "values_retrain_union.json", "values_merge_cat.json"):
        values = json.loads((run / name).read_text())
        assert values["method"] == "exact" and values["players"] == SOURCES
    assert not (run / "game.csv").exists()  # --mode retrain writes only the baseline
    frame = pl.read_csv(run / "retrain_coalitions.csv")
    assert frame.height == 2 ** len(SOURCES)
    for objective in OBJECTIVES:
        for column in ("arithmetic", "sequential", "sequential_std_err", "sequential_order_std", "sequential_order1",
                       "sequential_order2", "union", "union_std_err", "merge_cat"):
            assert f"{objective}_{column}" in frame.columns
        singles = frame.filter(pl.col("size") == 1)
        # singletons: sequential, union and the cat merge are the source adapter itself
        for column in ("sequential", "union", "merge_cat"):
            assert np.allclose(singles[f"{objective}_{column}"], singles[f"{objective}_arithmetic"], atol=1e-6)
        assert (frame.filter(pl.col("size") < 2)[f"{objective}_sequential_order_std"] == 0).all()
    fidelity = json.loads((run / "fidelity.json").read_text())
    assert fidelity["players"] == SOURCES and fidelity["objectives"] == list(OBJECTIVES)
    for variant in ("sequential", "union", "merge_cat"):
        for objective in OBJECTIVES:
            metrics = fidelity["variants"][variant]["objectives"][objective]
            assert set(metrics) == {
                "utility_pearson", "utility_pearson_multi", "utility_max_abs_diff", "utility_mean_abs_diff",
                "shapley_spearman", "shapley_max_abs_diff", "shapley_sign_agreement",
            }
            assert 0 <= metrics["shapley_sign_agreement"] <= 1
    assert fidelity["cost"]["sequential"]["train_wall_time_s"] > fidelity["cost"]["arithmetic"]["train_wall_time_s"]
    merge = fidelity["merge_vs_arithmetic_pairs"]["helpfulness"]
    assert merge["singleton_max_abs_diff"] <= 1e-3 and merge["pairs_max_abs_margin_diff"] >= 0
    assert "fidelity of language-model arithmetic" in retrained.stdout and "ρ(φ)" in retrained.stdout


def test_mode_both_writes_the_arithmetic_run_and_the_baseline(retrained: Retrained,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = (retrained.run / "fidelity.json").read_text()
    assert main(["value", str(retrained.folder / "valuation.toml"), "--mode", "both", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "values per source" in out and "fidelity of language-model arithmetic" in out
    for name in ("game.csv", "values.json", "run.json", "fidelity.json", "game_retrain_union.csv"):
        assert (retrained.run / name).is_file(), name
    after = json.loads((retrained.run / "fidelity.json").read_text())
    # exact: same models, same figures (cached log-probs, the same fidelity code runs twice)
    assert after["variants"] == json.loads(before)["variants"]


def test_cat_merge_of_a_singleton_equals_the_adapter(env: Env, retrained: Retrained, tmp_path: Path) -> None:
    prepared = prepare_inputs(load_valuation_config(retrained.folder / "valuation.toml"), progress=False)
    adapters = {s: load_adapter_record(retrained.run / "adapters", s) for s in SOURCES}
    eval_sets = prepared.eval_sets[:1]
    merged = merged_coalition_logprobs(
        prepared.base, adapters, [("noisy",), ("flan_v2_niv2", "sharegpt")], eval_sets,
        combination="cat", cache_dir=tmp_path, max_length=96, progress=False,
    )
    own = compute_eval_logprobs(prepared.base, adapters, eval_sets, cache_dir=tmp_path / "own", max_length=96,
                                progress=False).tables["helpfulness"]
    single = merged["helpfulness"][("noisy",)]
    assert np.max(np.abs(single.chosen - own.models["noisy"].chosen)) <= 1e-4
    assert np.max(np.abs(single.rejected - own.models["noisy"].rejected)) <= 1e-4
    pair = merged["helpfulness"][("flan_v2_niv2", "sharegpt")]
    assert np.all(np.isfinite(pair.chosen)) and np.max(np.abs(pair.chosen - own.base.chosen)) > 0
    again = merged_coalition_logprobs(
        prepared.base, adapters, [("noisy",)], eval_sets, combination="cat", cache_dir=tmp_path, max_length=96,
        progress=False,
    )
    assert np.array_equal(again["helpfulness"][("noisy",)].chosen, single.chosen)  # exact: from the cache


def test_too_many_sources_for_retraining_exits_2_before_training(env: Env, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, env.corpus, env.cache, extra="max_sources = 2")
    assert main(["value", str(config), "--mode", "retrain", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "field 'retrain.max_sources'" in err and "3 sources" in err
    assert not (tmp_path / "run" / "retrain").exists() and not (tmp_path / "run" / "fidelity.json").exists()


@pytest.mark.parametrize("seeds", ["0", "-1"])
def test_retrain_seeds_below_one_exits_2_naming_the_field(env: Env, tmp_path: Path, seeds: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, env.corpus, env.cache, extra=f"seeds = {seeds}")
    assert main(["value", str(config), "--mode", "both", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "retrain.seeds" in err and "greater than or equal to 1" in err
    assert not (tmp_path / "run").exists()


def test_two_seeds_retrain_everything_again_and_report_the_noise_floor(env: Env, tmp_path: Path) -> None:
    """[retrain] seeds = 2 with 2 sources, union only: replicate 1 trains its own 2 source adapters and the
    union with training seed 1; fidelity.json carries the noise floor; a rerun trains nothing."""
    sources = SOURCES[:2]
    path = write_config(tmp_path, env.corpus, env.cache, sources=sources,
                        extra='sequential = false\nmerge = "none"\nseeds = 2\nbootstrap = 50')
    config = load_valuation_config(path)
    starts: list[int] = []
    run = run_retrain(config, progress=False, callbacks=[_counter(starts)], log=lambda _m: None)
    # replicate 0: 1 union (its source adapters are the arithmetic's, trained uncounted); replicate 1: 2 + 1
    assert len(starts) == 1 + 2 + 1
    assert [r.training_seed for r in run.replicates] == [0, 1]
    seed1 = tmp_path / "run" / "retrain" / "seed1" / "adapters"
    for source in sources:
        manifest = json.loads((seed1 / source / "manifest.json").read_text())
        assert manifest["training"]["seed"] == 1
        assert len(manifest["metrics"]["loss_curve"]) >= 1
    own = json.loads((tmp_path / "run" / "adapters" / sources[0] / "manifest.json").read_text())
    assert own["training"]["seed"] == 0
    fidelity = json.loads((tmp_path / "run" / "fidelity.json").read_text())
    seeds = fidelity["seeds"]
    assert seeds["count"] == 2 and [r["retrain_seed"] for r in seeds["replicates"]] == [0, 1]
    assert seeds["replicates"][1]["fine_tunings_trained_this_run"] == 3
    noise = seeds["noise_floor"]["union"]
    assert set(noise) == set(OBJECTIVES)
    for objective in OBJECTIVES:
        entry = noise[objective]
        assert set(entry) == {"retrain_vs_retrain", "arithmetic_vs_retrain", "arithmetic_vs_retrain_same_seed",
                              "arithmetic_vs_arithmetic", "gap"}
        same = entry["arithmetic_vs_retrain_same_seed"]["utility_pearson"]["per_seed_pair"][0]
        expected = fidelity["variants"]["union"]["objectives"][objective]["utility_pearson"]
        assert same == pytest.approx(expected, abs=1e-9)  # replicate 0 is the run's own comparison
        assert 0 <= entry["retrain_vs_retrain"]["shapley_sign_agreement"]["value"] <= 1
    values1 = seeds["replicates"][1]["values"]["union"]["helpfulness"]
    assert set(values1) == set(sources)
    # utilities differ between the replicates (another seed trained other adapters)
    import polars as pl

    frame = pl.read_csv(tmp_path / "run" / "retrain_coalitions.csv")
    assert "helpfulness_union_seed1" in frame.columns and "helpfulness_arithmetic_seed1" in frame.columns
    assert not np.allclose(frame["helpfulness_arithmetic_seed1"].to_numpy()[1:],
                           frame["helpfulness_arithmetic"].to_numpy()[1:])
    starts.clear()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["value", str(path), "--mode", "retrain", "--no-progress"]) == 0
    assert "noise floor over 2" in out.getvalue()
    rerun = json.loads((tmp_path / "run" / "fidelity.json").read_text())
    assert rerun["seeds"]["replicates"][1]["fine_tunings_trained_this_run"] == 0
    for objective in OBJECTIVES:  # same adapters and log-probs (now from the cache), the same seeded bootstrap
        for comparison in ("retrain_vs_retrain", "arithmetic_vs_retrain", "gap"):
            for metric, entry in rerun["seeds"]["noise_floor"]["union"][objective][comparison].items():
                before = seeds["noise_floor"]["union"][objective][comparison][metric]
                if metric == "seed_pairs":
                    assert entry == before
                    continue
                for key in ("value", "lo", "hi"):
                    if before[key] is None:
                        assert entry[key] is None
                    else:
                        assert entry[key] == pytest.approx(before[key], abs=1e-6), (objective, comparison, metric)
