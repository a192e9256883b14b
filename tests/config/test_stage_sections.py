"""The serve and eval sections of the config: validated like the rest, read by `tunelab serve` and
`tunelab evaluate` from the run folder, and overridden by KEY=VALUE arguments and flags."""

import json
from pathlib import Path

import pytest
import yaml

import tunelab.serving
from conftest import write_config
from tunelab.cli.commands import build_parser
from tunelab.cli.deploy import serve_settings
from tunelab.config import load_config
from tunelab.config.load import with_overrides
from tunelab.config.schema import ServeSection
from tunelab.errors import ConfigError
from tunelab.rundir import COMPLETE_MARKER, RunDir, open_run
from tunelab.serving import ServeSettings


def fake_run(folder: Path, **sections) -> Path:
    """A run folder with only a config.yaml and the COMPLETE marker: enough for reading its settings."""
    cfg = load_config(write_config(folder, **sections))
    run = folder / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    (run / COMPLETE_MARKER).touch()
    return run


def settings_for(*argv) -> ServeSettings:
    return serve_settings(build_parser().parse_args(["serve", *map(str, argv)]))


def test_the_sections_are_read_from_yaml(tmp_path):
    cfg = load_config(write_config(tmp_path, serve={"port": 9001, "host": "::1", "threads": 2, "seed": 3,
                                                    "max_wait_ms": 0, "timeout_s": 2.5},
                                   eval={"seed": 7, "threads": 1, "max_examples": 50}))
    assert (cfg.serve.port, cfg.serve.host, cfg.serve.threads, cfg.serve.seed) == (9001, "::1", 2, 3)
    assert cfg.serve.max_wait_ms == 0 and cfg.serve.timeout_s == 2.5 and cfg.serve.max_batch_size == 16
    assert (cfg.eval.seed, cfg.eval.threads, cfg.eval.max_examples, cfg.eval.split) == (7, 1, 50, "test")


def test_typos_and_bad_values_in_the_sections_are_refused(tmp_path):
    config = write_config(tmp_path, serve={"prot": 9000, "max_batch_size": 0, "api_key": "k"},
                          eval={"sede": 1, "threads": 0})
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    problems = "\n".join(caught.value.problems)
    assert "serve.prot: unknown key; did you mean 'port'?" in problems
    assert "serve.api_key: unknown key" in problems  # secrets never live in the config
    assert "serve.max_batch_size: 0 is invalid" in problems
    assert "eval.sede: unknown key; did you mean 'seed'?" in problems and "eval.threads: 0 is invalid" in problems


def test_an_old_run_without_the_sections_still_loads(tmp_path):
    run = fake_run(tmp_path)
    tree = yaml.safe_load((run / "config.yaml").read_text())
    del tree["serve"], tree["eval"]["seed"], tree["eval"]["threads"]
    (run / "config.yaml").write_text(yaml.safe_dump(tree))
    _, cfg = open_run(run)
    assert cfg.serve == ServeSection() and cfg.eval.seed is None and cfg.eval.threads is None
    assert settings_for(run) == ServeSettings()


def test_the_settings_defaults_are_the_schemas(tmp_path):
    assert ServeSettings() == ServeSettings.from_config(ServeSection())
    args = build_parser().parse_args(["serve", str(tmp_path)])
    assert args.host is None and args.port is None and args.max_batch_size is None and args.timeout_s is None


def test_the_runs_config_supplies_what_no_flag_gives(tmp_path):
    run = fake_run(tmp_path, serve={"port": 9100, "max_batch_size": 4, "threads": 1, "timeout_s": 7.5})
    settings = settings_for(run)
    assert (settings.port, settings.max_batch_size, settings.threads, settings.timeout_s) == (9100, 4, 1, 7.5)
    assert settings.host == "127.0.0.1" and settings.max_inputs == ServeSection().max_inputs


def test_flags_and_overrides_replace_the_runs_config(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_API_KEY", "s3cret-key")
    run = fake_run(tmp_path, serve={"port": 9100, "max_batch_size": 4, "max_choices": 2})
    settings = settings_for(run, "serve.port=9200", "serve.seed=5", "serve.max_choices=3", "--port", "9300",
                            "--max-batch-size", "2", "--timeout", "5", "--host", "0.0.0.0", "--allowed-host", "a")
    assert settings.port == 9300  # the flag wins over the override, which wins over the config
    assert (settings.max_batch_size, settings.max_choices, settings.seed, settings.timeout_s) == (2, 3, 5, 5.0)
    assert settings.host == "0.0.0.0" and settings.api_key == "s3cret-key" and settings.allowed_hosts == ("a",)


def test_serve_overrides_are_checked(tmp_path):
    run = fake_run(tmp_path)
    with pytest.raises(ConfigError, match=r"train.epochs=1: only serve.\* settings can change"):
        settings_for(run, "train.epochs=1")
    with pytest.raises(ConfigError, match="serve.prot: unknown key; did you mean 'port'"):
        settings_for(run, "serve.prot=1")
    with pytest.raises(ConfigError, match="serve.port: 70000 is invalid"):
        settings_for(run, "--port", "70000")


def test_the_cli_hands_the_resolved_settings_to_the_server(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("TUNELAB_API_KEY", raising=False)
    served = []
    monkeypatch.setattr(tunelab.serving, "run", lambda run, variant, settings, **_: served.append(settings))
    run = fake_run(tmp_path, serve={"port": 9100, "max_tokens_cap": 32})
    code, _, err = run_cli("serve", run, "--max-inputs", "5", "serve.max_wait_ms=1")
    assert code == 0, err
    assert (served[0].port, served[0].max_tokens_cap, served[0].max_inputs, served[0].max_wait_ms) == (9100, 32, 5, 1)


def test_a_network_host_in_the_config_needs_an_api_key(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("TUNELAB_API_KEY", raising=False)
    served = []
    monkeypatch.setattr(tunelab.serving, "run", lambda run, variant, settings, **_: served.append(settings.host))
    run = fake_run(tmp_path, serve={"host": "0.0.0.0"})
    code, _, err = run_cli("serve", run)
    assert code == 2 and "serve.host: 0.0.0.0" in err and "API key" in err and not served
    code, _, err = run_cli("serve", run, "--host", "127.0.0.1")
    assert code == 0 and served == ["127.0.0.1"], err


def test_the_server_takes_threads_seed_and_precision_from_its_settings(monkeypatch):
    import types

    from tunelab.serving import server

    seen = {}
    loaded = types.SimpleNamespace(run_dir=Path("runs/x"), cfg=types.SimpleNamespace(task="classification"),
                                   precision={"used": "fp32"})
    monkeypatch.setattr(server, "load_run", lambda *a, **k: seen.setdefault("precision", k["precision"]) and loaded)
    monkeypatch.setattr(server, "set_threads", lambda threads: seen.setdefault("threads", threads) or 4)
    monkeypatch.setattr(server, "seed_once", lambda seed: seen.setdefault("seed", seed))
    monkeypatch.setattr(server, "create_app", lambda loaded, settings, model_id: seen.setdefault("app", settings))
    monkeypatch.setattr(server, "uvicorn_server", lambda app, host, port, timeouts: types.SimpleNamespace(
        run=lambda: seen.setdefault("bound", (host, port))))
    server.run("runs/x", None, ServeSettings(threads=1, seed=9, port=8123, precision="bf16"), echo=lambda _: None)
    assert seen["threads"] == 1 and seen["seed"] == 9 and seen["bound"] == ("127.0.0.1", 8123)
    assert seen["precision"] == "bf16"


def test_evaluate_takes_its_seed_and_overrides_from_the_eval_section(classifier_dir, run_cli, monkeypatch):
    import tunelab.evaluation.classification as classification

    seeds = []
    real_compare = classification.compare
    monkeypatch.setattr(classification, "compare", lambda *a: seeds.append(a[-1]) or real_compare(*a))
    report_path = RunDir(classifier_dir).root / "eval.json"

    code, _, err = run_cli("evaluate", classifier_dir, "eval.bootstrap_samples=100", "eval.max_examples=3")
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert seeds == [0] and report["settings"]["seed"] == 0  # empty eval.seed: train.seed, as before
    assert report["examples"] == 3 and report["settings"]["bootstrap_samples"] == 100

    code, _, err = run_cli("evaluate", classifier_dir, "eval.seed=11", "eval.threads=1", "eval.bootstrap_samples=100",
                           "eval.max_examples=3", "--max-examples", "2")
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert seeds[-1] == 11 and report["settings"]["seed"] == 11 and report["settings"]["threads"] == 1
    assert report["examples"] == 2  # the flag wins over the override

    code, _, err = run_cli("evaluate", classifier_dir, "train.seed=3")
    assert code == 2 and "only eval.* settings can change" in err


def test_overrides_after_training_keep_the_rest_of_the_config(tmp_path):
    cfg = load_config(write_config(tmp_path, train={"seed": 4}))
    changed = with_overrides(cfg, ["eval.seed=2", "serve.port=9999"], values={"serve.max_inputs": 3,
                                                                              "serve.host": None})
    assert (changed.eval.seed, changed.serve.port, changed.serve.max_inputs) == (2, 9999, 3)
    assert changed.serve.host == "127.0.0.1" and changed.train == cfg.train and changed.output == cfg.output
    with pytest.raises(ConfigError, match=r"only eval.\*, quantize.\*, quantization.\* and serve.\* settings"):
        with_overrides(cfg, ["lora.r=2"])


def test_eval_and_serve_fall_back_to_the_training_seed_and_threads():
    from tunelab.config import from_dict

    base = {"task": "classification", "data": {"train": "x.jsonl"}, "train": {"threads": 1, "seed": 7}}
    cfg = from_dict(base)
    assert (cfg.eval_seed(), cfg.eval_threads(), cfg.serve_threads()) == (7, 1, 1)
    own = from_dict({**base, "eval": {"seed": 3, "threads": 2}, "serve": {"threads": 2}})
    assert (own.eval_seed(), own.eval_threads(), own.serve_threads()) == (3, 2, 2)
    measured = from_dict({"task": "classification", "data": {"train": "x.jsonl"}})
    assert (measured.eval_threads(), measured.serve_threads()) == (None, None)


def test_a_bad_override_of_a_finished_run_is_one_line_under_one_title():
    from tunelab.config import from_dict
    from tunelab.config.load import with_overrides
    from tunelab.errors import ConfigError

    cfg = from_dict({"task": "classification", "data": {"train": "x.jsonl"}})
    for overrides, problem in [(["serve.prot=1"], "serve.prot: unknown key; did you mean 'port'?"),
                               (["train.epochs=2"], "train.epochs=2: only serve.* settings can change after training")]:
        with pytest.raises(ConfigError) as caught:
            with_overrides(cfg, overrides, ("serve",))
        assert caught.value.title == "invalid settings for this run" and caught.value.problems == [problem]
