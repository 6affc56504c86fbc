"""The helpers every stage shares: one JSONL reader, one set of nested-dict helpers, one table of
condition keys, one sweep collector."""

from __future__ import annotations

import json

import pytest

from midtrain.tracking.nested import flatten, merge, select, unflatten
from midtrain.tracking.rundir import iter_jsonl


# JSONL ---------------------------------------------------------------------------------------
def test_a_line_separator_inside_a_document_is_not_a_line_break(tmp_path):
    """Generated text may hold U+2028 or U+0085; JSON writes them raw (ensure_ascii=False), and
    only a newline ends a JSONL record."""
    from midtrain.data.corpus import read_jsonl
    from midtrain.generation.match import load_match

    texts = ["first part\u2028second part of one document", "another\x85document", "plain"]
    path = tmp_path / "documents.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert [r["text"] for r in read_jsonl(path)] == texts
    assert load_match(path).words == [len(t.split()) for t in texts]


def test_a_stage_file_cut_inside_a_character_is_redone(tmp_path):
    """A crash mid-write can cut a line inside a multi-byte character: that request is redone,
    the others are kept, and the next append starts on a fresh line."""
    from midtrain.generation.stages import StageStore

    path = tmp_path / "documents.jsonl"
    good = json.dumps({"key": "a", "text": "café"}, ensure_ascii=False).encode()
    cut = json.dumps({"key": "b", "text": "crème"}, ensure_ascii=False).encode()[:-5]  # inside "è"
    path.write_bytes(good + b"\n" + b"[1, 2]\n" + cut)
    store = StageStore(path)
    assert set(store.records) == {"a"} and store.corrupt_lines == 2
    assert path.read_bytes().endswith(b"\n")


def test_jsonl_errors_name_the_file_and_line_or_go_to_a_handler(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"a": \n\xff\n[2]\n')
    with pytest.raises(ValueError, match=rf"{path}:3: not valid JSON"):
        list(iter_jsonl(path))
    bad = []
    rows = list(iter_jsonl(path, on_bad=lambda n, why: bad.append((n, why.split(" (")[0]))))
    assert rows == [(1, {"a": 1}), (5, [2])]
    assert bad == [(3, "not valid JSON"), (4, "not UTF-8")]


# Nested dicts --------------------------------------------------------------------------------
def test_select_flatten_unflatten_merge():
    tree = {"eval": {"anima": {"overall_mean": 0.7, "by_dimension": {}}}, "seed": 0, "tags": [1]}
    assert select(tree, "eval.anima.overall_mean") == 0.7
    assert select(tree, "eval.missing.x") is None and select(tree, "seed.x", default=3) == 3
    flat = flatten(tree, "/")
    assert flat == {"eval/anima/overall_mean": 0.7, "eval/anima/by_dimension": {}, "seed": 0, "tags": [1]}
    assert unflatten({**flat, "_step": 4}) == tree  # W&B's own keys are left out
    base = {"a": {"x": 1}, "b": 1}
    assert merge(base, {"a": {"y": 2}, "b": {"c": 3}}) == {"a": {"x": 1, "y": 2}, "b": {"c": 3}}
    assert base == {"a": {"x": 1}, "b": 1}


def test_the_wandb_summary_and_the_run_identity_flatten_alike():
    from midtrain.tracking.wandb import flatten_metrics

    metrics = {"eval": {"probe": {"margin": -0.1, "ok": True, "per_pair": {"p1": 0.2}}}, "model": "m", "x": None}
    dotted = flatten(metrics)
    assert flatten_metrics(metrics) == {k.replace(".", "/"): v for k, v in dotted.items()
                                        if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    assert flatten_metrics(metrics, prefix="run") == {f"run/{k}": v for k, v in flatten_metrics(metrics).items()}


# Condition keys and the sweep collector ------------------------------------------------------
def test_wandb_runs_without_condition_keys_in_their_summary_take_them_from_the_config():
    """A W&B run config is the resolved config: the condition keys are read where the config
    holds them (`model.name`, not the whole `model` node)."""
    from midtrain.report import collect_wandb

    class Run:
        name, id, state = "r", "r", "finished"
        summary = {"eval/anima/overall_mean": 0.5}
        config = {"condition": "treatment", "seed": 2, "model": {"name": "tiny", "hidden_size": 8},
                  "corpus": {"name": "tmpl-animal", "num_docs": 10}, "instruct": {"samples": 4},
                  "preserve": {"name": "kl", "weight": 0.1}}

    class Api:
        def runs(self, path, filters):
            return [Run()]

    rows, problems = collect_wandb(["g"], "proj", None, "eval.anima.overall_mean", "eval.anima.by_dimension", api=Api())
    assert problems == []
    assert {k: rows[0][k] for k in ("condition", "seed", "model", "corpus", "num_docs", "instruct_samples",
                                    "preserve")} == {"condition": "treatment", "seed": 2, "model": "tiny",
                                                     "corpus": "tmpl-animal", "num_docs": 10,
                                                     "instruct_samples": 4, "preserve": "kl"}


def test_the_demo_collects_runs_as_the_report_does_and_skips_a_corrupt_one(tmp_path):
    from midtrain import demo, report

    for name, text, done in (("a", '{"run_id": "a", "seed": 0}', True), ("b", '{"run_id": ', True),
                             ("c", '{"run_id": "c"}', False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(text)
        if done:
            (tmp_path / name / "DONE").write_text("{}")
    runs = demo.collect_runs(tmp_path)
    assert runs == [{"run_id": "a", "seed": 0, "_dir": str(tmp_path / "a")}]
    problems: list = []
    assert report.collect_runs(tmp_path, problems=problems) == runs
    assert [(p["run_id"], p["reason"].split(":")[0].split(" (")[0]) for p in problems] == [
        ("b", "corrupt metrics.json"), ("c", "not DONE")]


def test_conditions_are_listed_in_one_order_everywhere():
    from midtrain.tracking.conditions import COMPARISONS, CONDITIONS, condition_order

    assert condition_order(["custom", "base", "control", "treatment", "instruct_baseline"]) == [
        "treatment", "control", "instruct_baseline", "base", "custom"]
    assert all(a in CONDITIONS and b in CONDITIONS for a, b in COMPARISONS)


def test_mutation_selection_keeps_each_modules_own_tests_and_never_leaves_a_function_without():
    from tests.mutation_select import narrow, own_tests

    assert own_tests("midtrain.tracking.rundir.xǁRunDirǁlock") == ("test_run_outputs.py",)
    assert own_tests("midtrain.tracking.wandb.x_log_run") == ("test_wandb.py",)  # the longer prefix wins
    assert own_tests("midtrain.train.x_train") is None
    recorded = {
        "midtrain.tracking.rundir.x_atomic_write_text": ["tests/test_wandb.py::test_a", "tests/test_run_outputs.py::test_b",
                                                         "tests/test_run_outputs.py::test_c"],
        "midtrain.report.x_gaps": ["tests/test_wandb.py::test_a"],  # none of its own: left as recorded
        "midtrain.train.x_train": ["tests/test_report.py::test_d"],  # no module entry: left as recorded
    }
    out, counts = narrow(recorded)
    assert out == {"midtrain.tracking.rundir.x_atomic_write_text": ["tests/test_run_outputs.py::test_b",
                                                                    "tests/test_run_outputs.py::test_c"],
                   "midtrain.report.x_gaps": ["tests/test_wandb.py::test_a"],
                   "midtrain.train.x_train": ["tests/test_report.py::test_d"]}
    assert counts == {"narrowed": 1, "kept": 2, "dropped": 1}


def test_under_mutmut_a_mutants_tests_run_fastest_first(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tests.conftest import pytest_collection_modifyitems

    durations = {"t.py::slow": 4.0, "t.py::fast": 0.01, "t.py::mid_b": 0.5, "t.py::mid_a": 0.5}
    (tmp_path / "mutmut-stats.json").write_text(json.dumps({"duration_by_test": durations}))
    monkeypatch.chdir(tmp_path)  # mutmut runs the tests from mutants/, beside its stats file
    names = ["t.py::slow", "t.py::unrecorded", "t.py::mid_b", "t.py::fast", "t.py::mid_a"]

    def order(mutant):
        if mutant is None:
            monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
        else:
            monkeypatch.setenv("MUTANT_UNDER_TEST", mutant)
        items = [SimpleNamespace(nodeid=n) for n in names]
        pytest_collection_modifyitems(None, None, items)
        return [i.nodeid for i in items]

    assert order("midtrain.data.packing.x_pack_segments__mutmut_3") == [
        "t.py::fast", "t.py::mid_a", "t.py::mid_b", "t.py::slow", "t.py::unrecorded"]
    # Outside a mutant's run (plain pytest, mutmut's tracing and clean runs) the order is pytest's.
    for mutant in (None, "", "stats", "list_all_tests", "fail"):
        assert order(mutant) == names
    (tmp_path / "mutmut-stats.json").unlink()
    assert order("midtrain.data.packing.x_pack_segments__mutmut_3") == names


def test_mutation_summary_accounts_for_every_mutant_whatever_its_exit_code(tmp_path, capsys):
    """A worker killed by a signal (-9: SIGKILL, from the CPU limit's hard stop or the kernel)
    or any exit code mutmut does not name is a verdict of its own, counted as not killed and
    listed with the survivors; no mutant drops out of the table."""
    from tests.mutation_summary import COLUMNS, main

    codes = {"m.x_f__mutmut_1": 1, "m.x_f__mutmut_2": 0, "m.x_f__mutmut_3": -9, "m.x_f__mutmut_4": 36,
             "m.x_f__mutmut_5": 0, "m.x_f__mutmut_6": 77, "m.x_f__mutmut_7": None}
    meta = tmp_path / "mutants" / "src" / "m.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    equivalent = tmp_path / "equivalent.txt"
    equivalent.write_text("m.x_f__mutmut_5  # the same for every input\n")

    assert main(["--survivors"], root=tmp_path, equivalent=equivalent) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["module", *COLUMNS, "killed share"]
    total = dict(zip(header, (c.strip() for c in lines[-5].strip("|").split("|"))))
    assert total["module"] == "**total**"
    assert {k: total[k] for k in COLUMNS} == {
        "mutants": "7", "killed": "1", "timeout": "1", "survived": "1", "no tests": "0", "equivalent": "1",
        "crashed": "2", "not checked": "1"}
    assert total["killed share"] == "40.0%"  # (1 killed + 1 timeout) / (7 - 1 equivalent - 1 not checked)
    assert lines[-4:] == ["", "m.x_f__mutmut_2", "m.x_f__mutmut_3", "m.x_f__mutmut_6"]
