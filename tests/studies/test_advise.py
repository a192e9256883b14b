"""`tunelab advise`: three approaches measured, one recommended by a stated rule."""

import json
from pathlib import Path

import pytest

from conftest import train_config
from tunelab.studies.advise import recommend

ROOT = Path(__file__).resolve().parents[2]


def rows(prompting, retrieval, tuned):
    return [{"approach": a, "quality": q, "metric": "accuracy"}
            for a, q in (("prompting", prompting), ("retrieval", retrieval), ("fine-tuning", tuned))]


def test_rule_orders_few_shot_between_prompting_and_retrieval():
    four = rows(0.50, 0.94, 0.95)[:1] + [{"approach": "few-shot", "quality": 0.94, "metric": "rougeL"}] + rows(
        0.50, 0.94, 0.95)[1:]
    rec = recommend(four, 0.02)
    assert rec["approach"] == "few-shot" and "prompting < few-shot < retrieval < fine-tuning" in rec["rule"]


def test_rule_prefers_the_simplest_approach_within_tolerance():
    assert recommend(rows(0.50, 0.94, 0.95), 0.02)["approach"] == "retrieval"
    assert recommend(rows(0.50, 0.80, 0.95), 0.02)["approach"] == "fine-tuning"
    assert recommend(rows(0.96, 0.80, 0.95), 0.02)["approach"] == "prompting"
    assert "within 0.02" in recommend(rows(0.50, 0.94, 0.95), 0.02)["rule"]


@pytest.mark.slow
def test_advise_on_builtin_data(tmp_path, run_cli):
    code, out, err = run_cli("advise", ROOT / "configs" / "support-intents-lora.yaml", "train.max_steps=30",
                             "train.eval_strategy=no", "eval.max_examples=60", "--out", tmp_path / "adv")
    assert code == 0, err
    report = json.loads((tmp_path / "adv" / "advise.json").read_text())
    assert [r["approach"] for r in report["approaches"]] == ["prompting", "retrieval", "fine-tuning"]
    for row in report["approaches"]:
        assert 0 <= row["quality"] <= 1 and row["latency_ms"] > 0 and row["prompt_tokens"] > 0
    assert report["recommendation"]["approach"] in ("prompting", "retrieval", "fine-tuning")
    assert "recommendation:" in out and "rule:" in out


@pytest.mark.slow
def test_advise_causal(tmp_path, tiny_llama, run_cli):
    config = train_config(tmp_path, tiny_llama, task="causal_lm", train={"max_steps": 6},
                          eval={"max_new_tokens": 6})
    code, out, err = run_cli("advise", config, "--out", tmp_path / "adv")
    assert code == 0, err
    report = json.loads((tmp_path / "adv" / "advise.json").read_text())
    assert [r["approach"] for r in report["approaches"]] == ["prompting", "few-shot", "retrieval", "fine-tuning"]
    prompting, few_shot, retrieval, tuned = report["approaches"]
    assert few_shot["prompt_tokens"] > prompting["prompt_tokens"]  # example turns cost tokens at every request
    assert retrieval["prompt_tokens"] > prompting["prompt_tokens"]
    assert tuned["prompt_tokens"] == prompting["prompt_tokens"]
    assert "examples" in few_shot["what"] and "nearest" in retrieval["what"]


def test_example_turns_go_after_the_system_message():
    from tunelab.studies.advise import with_examples

    shots = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    system = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert [m["role"] for m in with_examples(system, shots)] == ["system", "user", "assistant", "user"]
    assert with_examples(system[1:], shots) == shots + system[1:]
