"""The workspace keeps every path a submitted config names inside it, and writes uploads whole or not at all."""

import os

import pytest

from studio_support import config
from tunelab.errors import ConfigError, TunelabError
from tunelab.studio.workspace import check_name


@pytest.mark.parametrize("name", ["demo", "run-1", "a.b_c", "X" * 64])
def test_usable_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../x", "/etc", "a\x00b", "x" * 65, "-x", "a b",
                                  "runs/../x", 3, None])
def test_names_that_could_be_paths_are_refused(name):
    with pytest.raises(TunelabError, match="not a usable name"):
        check_name(name)


def test_local_paths_become_absolute_inside_the_workspace(workspace):
    (workspace.root / "models" / "mine").mkdir(parents=True)
    tree = workspace.confine(config(model={"name": "models/mine"}, data={"validation": "uploads/train.jsonl"}), "r1")
    assert tree["data"]["train"] == str(workspace.uploads_dir / "train.jsonl")
    assert tree["data"]["validation"] == str(workspace.uploads_dir / "train.jsonl")
    assert tree["model"]["name"] == str(workspace.root / "models" / "mine")
    assert tree["output"] == {"dir": str(workspace.runs_dir / "r1"), "name": "r1"}


def test_builtins_and_hub_ids_are_kept(workspace):
    tree = workspace.confine(config(data={"train": "builtin:support_intents/train.jsonl", "test": "hf:stanfordnlp/sst2"},
                                    model={"name": "HuggingFaceTB/SmolLM2-135M-Instruct"}), "r1")
    assert tree["data"]["train"] == "builtin:support_intents/train.jsonl" and tree["data"]["test"] == "hf:stanfordnlp/sst2"
    assert tree["model"]["name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert workspace.confine(config(model={"name": "builtin:smollm2-135m"}), "r1")["model"]["name"] == "builtin:smollm2-135m"


@pytest.mark.parametrize("key, value", [
    ("data.train", "/etc/passwd"), ("data.train", "../secret.jsonl"), ("data.train", "uploads/../../x.jsonl"),
    ("data.test", "~/.ssh/id_rsa"), ("model.name", "/root/model"), ("model.name", "../model"),
    ("model.name", "builtin:../x"), ("model.name", "builtin:nope"), ("method.init_from", "/tmp/adapter"), ("train.distributed_config", "/etc/ds.json"),
    ("output.dir", "/tmp/elsewhere"), ("output.dir", "runs/other"), ("data.train", "builtin:../../etc/passwd"),
    ("data.train", 7)])
def test_paths_outside_the_workspace_are_refused(workspace, key, value):
    section, field = key.split(".")
    tree = config(**{section: {field: value}})
    with pytest.raises(ConfigError) as err:
        workspace.confine(tree, "r1")
    assert err.value.problems[0].startswith(key), err.value.problems


def test_a_link_inside_that_points_outside_is_refused(workspace, tmp_path):
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}\n")
    os.symlink(outside, workspace.uploads_dir / "link.jsonl")
    with pytest.raises(ConfigError, match="outside the workspace"):
        workspace.confine(config(data={"train": "uploads/link.jsonl"}), "r1")


def test_every_wrong_path_is_named_at_once(workspace):
    with pytest.raises(ConfigError) as err:
        workspace.confine(config(data={"train": "/a.jsonl", "test": "/b.jsonl"}, output={"dir": "/c"}), "r1")
    assert [p.split(":")[0] for p in err.value.problems] == ["data.train", "data.test", "output.dir"]


def test_the_run_folder_itself_may_be_named(workspace):
    tree = workspace.confine(config(output={"dir": "runs/r1", "overwrite": False}), "r1")
    assert tree["output"] == {"dir": str(workspace.runs_dir / "r1"), "name": "r1", "overwrite": False}


def test_uploads_are_written_whole_under_their_name(workspace):
    path = workspace.write_upload("mine.jsonl", b'{"text": "a", "label": "b"}\n')
    assert path == workspace.uploads_dir / "mine.jsonl" and path.read_bytes().endswith(b"\n")
    assert [u["name"] for u in workspace.uploads()] == ["mine.jsonl", "train.jsonl"]
    for bad in ("../x.jsonl", ".x.jsonl", "x.exe", "a/b.jsonl"):
        with pytest.raises(TunelabError):
            workspace.write_upload(bad, b"x")
    assert sorted(p.name for p in workspace.uploads_dir.iterdir()) == ["mine.jsonl", "train.jsonl"]
