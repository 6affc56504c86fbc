"""Settings that follow the seed (`corpus.seed: ${seed}`) are averaged over with it, never split cells."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from midtrain.paths import CONF_DIR
from midtrain.pipeline import pipeline
from midtrain.report import report
from midtrain.tracking.identity import cell_hash, config_hash, settings_diff
from tests.conftest import compose_cfg

FOLLOW = ["corpus.seed=${seed}", "instruct.seed=${seed}", "qa.seed=${seed}"]


def test_a_setting_that_follows_the_seed_is_part_of_the_seed_not_of_the_cell():
    defaults = compose_cfg("pipeline", FOLLOW)
    one, two = (compose_cfg("pipeline", [*FOLLOW, f"seed={s}"]) for s in (1, 2))
    assert (one.corpus.seed, two.corpus.seed) == (1, 2)
    assert config_hash(one) != config_hash(two)  # two runs, two directories
    assert cell_hash(one) == cell_hash(two) == cell_hash(defaults)  # one cell to average over
    assert settings_diff(one, defaults) == {"seed": 1}
    assert settings_diff(defaults, defaults) == {}
    # A value of its own is a setting: its own column and its own cell.
    fixed = compose_cfg("pipeline", [*FOLLOW, "seed=1", "corpus.seed=5"])
    assert settings_diff(fixed, defaults) == {"corpus.seed": 5, "seed": 1}
    assert cell_hash(fixed) != cell_hash(one)


def test_report_averages_runs_whose_corpus_draw_follows_their_seed(tmp_path):
    over = ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=follow", "corpus.num_docs=16",
            "data.seq_len=256", "experiment=treatment", "instruct.samples=0", *FOLLOW]
    defaults = compose_cfg("pipeline", over)
    metrics = [pipeline(compose_cfg("pipeline", [*over, f"seed={s}"]), defaults=defaults) for s in (0, 1)]
    assert [m["settings"] for m in metrics] == [{}, {"seed": 1}]
    assert metrics[0]["cell_hash"] == metrics[1]["cell_hash"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        rcfg = compose("report", overrides=[f"sweep_dirs=[{tmp_path / 'runs' / 'follow'}]", f"out_dir={tmp_path / 'out'}",
                                            "metric=eval.probe.margin", "dimensions=eval.probe.by_dimension",
                                            "plots.enabled=false"])
    out = report(rcfg)
    assert len(out["summary"]) == 1 and out["summary"][0]["n"] == 2 and not out["missing"]
    assert "corpus.seed" not in (tmp_path / "out" / "summary.csv").read_text().splitlines()[0]
