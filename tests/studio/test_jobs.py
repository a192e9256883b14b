"""The studio's queue: one child at a time, in order; failures, stops, resumes and restarts, with a stand-in
child (``studio_support``) so each test takes a moment."""

import json
import time

import pytest

from studio_support import behave, calls, config
from tunelab.errors import ConfigError, DataError, TunelabError
from tunelab.studio.jobs import Jobs, NameTaken


def wait_for(jobs, name, statuses, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if jobs.get(name).status in statuses:
            return jobs.get(name)
        time.sleep(0.02)
    raise AssertionError(f"{name} stayed {jobs.get(name).status}; log: {jobs.log_tail(name)}")


def start_training_until_stopped(jobs, workspace, name):
    """Queue a run whose child trains until it gets SIGTERM; return once it is training."""
    behave(workspace, **{name: "hang"})
    jobs.submit(name, config())
    jobs.start()
    wait_for(jobs, name, ("running",))
    while not (workspace.runs_dir / name / "progress.json").exists():
        time.sleep(0.02)


def test_runs_train_then_evaluate_one_at_a_time_in_order(jobs, workspace):
    jobs.submit("first", config())
    jobs.submit("second", config())
    jobs.start()
    for name in ("first", "second"):
        assert wait_for(jobs, name, ("complete",)).returncode == 0
    seen = calls(workspace)
    starts = [(c["name"], c["argv"][0]) for c in seen if "start" in c]
    assert starts == [("first", "train"), ("first", "evaluate"), ("second", "train"), ("second", "evaluate")]
    first_end = max(c["end"] for c in seen if c.get("name") == "first" and "end" in c)
    second_start = min(c["start"] for c in seen if c.get("name") == "second" and "start" in c)
    assert first_end <= second_start, "the second run must wait for the first"
    assert seen[0]["argv"] == ["train", str(workspace.config_path("first"))]
    assert (workspace.runs_dir / "first" / "eval.json").exists()


def test_the_config_written_is_the_confined_one(jobs, workspace):
    jobs.submit("r1", config(train={"epochs": 1}))
    import yaml

    written = yaml.safe_load(workspace.config_path("r1").read_text())
    assert written["data"]["train"] == str(workspace.uploads_dir / "train.jsonl")
    assert written["output"]["dir"] == str(workspace.runs_dir / "r1") and written["train"] == {"epochs": 1}
    assert json.loads(workspace.state_path("r1").read_text())["status"] == "queued"


def test_a_failing_child_marks_its_run_failed_with_its_last_lines_and_the_queue_goes_on(jobs, workspace):
    behave(workspace, bad="fail")
    jobs.submit("bad", config())
    jobs.submit("good", config())
    jobs.start()
    failed = wait_for(jobs, "bad", ("failed",))
    assert failed.returncode == 2 and "field 'label' is missing" in failed.message
    assert any("invalid data" in line for line in jobs.log_tail("bad"))
    assert wait_for(jobs, "good", ("complete",))


def test_stop_saves_a_checkpoint_and_resume_continues_from_it(jobs, workspace):
    start_training_until_stopped(jobs, workspace, "long")
    jobs.stop("long")
    stopped = wait_for(jobs, "long", ("stopped",))
    assert stopped.returncode == 143 and "resume" in stopped.message
    assert "saved a checkpoint" in jobs.log_tail("long")[-1]
    behave(workspace)  # the resumed run finishes
    jobs.resume("long")
    wait_for(jobs, "long", ("complete",))
    trains = [c["argv"] for c in calls(workspace) if "start" in c and c["argv"][0] == "train"]
    assert trains[-1] == ["train", str(workspace.config_path("long")), "--resume"]


def test_a_run_stopped_before_its_first_checkpoint_starts_over(jobs, workspace):
    behave(workspace, r="fail")
    jobs.submit("r", config())
    jobs.start()
    wait_for(jobs, "r", ("failed",))
    (workspace.runs_dir / "r").mkdir(exist_ok=True)  # what an early failure can leave
    behave(workspace)
    jobs.resume("r")
    wait_for(jobs, "r", ("complete",))
    trains = [c["argv"] for c in calls(workspace) if "start" in c and c["argv"][0] == "train"]
    assert trains[-1][-1] == "output.overwrite=true"


def test_a_queued_run_stopped_never_starts(jobs, workspace):
    behave(workspace, long="hang")
    jobs.submit("long", config())
    jobs.submit("later", config())
    jobs.start()
    wait_for(jobs, "long", ("running",))
    assert jobs.stop("later").status == "stopped"
    jobs.stop("long")
    wait_for(jobs, "long", ("stopped",))
    time.sleep(0.3)
    assert jobs.get("later").status == "stopped" and not any(c.get("name") == "later" for c in calls(workspace))
    assert jobs.resume("later").status == "queued"
    with pytest.raises(TunelabError, match="only a stopped or failed run"):
        jobs.resume("later")


def test_after_a_restart_queued_runs_start_and_running_ones_are_stopped(workspace, fake_tunelab):
    first = Jobs(workspace, python=str(fake_tunelab))
    first.submit("was-running", config())
    first.submit("was-queued", config())
    state = json.loads(workspace.state_path("was-running").read_text())
    workspace.state_path("was-running").write_text(json.dumps({**state, "status": "running", "stage": "train"}))
    again = Jobs(workspace, python=str(fake_tunelab)).start()
    try:
        assert again.get("was-running").status == "stopped" and "studio closed" in again.get("was-running").message
        wait_for(again, "was-queued", ("complete",))
        assert again.get("was-running").status == "stopped"
    finally:
        again.close()


def test_closing_the_studio_stops_the_child_it_runs(jobs, workspace):
    start_training_until_stopped(jobs, workspace, "long")
    jobs.close()
    assert jobs.get("long").status == "stopped" and jobs.process is None


@pytest.mark.parametrize("tree, error, says", [
    (config(data={"train": "/etc/passwd"}), ConfigError, "outside the workspace"),
    (config(train={"epochs": "many"}), ConfigError, "train.epochs"),
    (config(model={"trust_remote_code": True}), TunelabError, "does not run code"),
    (config(model={"allow_pickle_weights": True}), TunelabError, "does not run code"),
    (config(data={"train": "uploads/missing.jsonl"}), DataError, "missing.jsonl"),
])
def test_what_submit_refuses_writes_nothing(jobs, workspace, tree, error, says):
    with pytest.raises(error, match=says):
        jobs.submit("r1", tree)
    assert not workspace.config_path("r1").exists() and not workspace.state_path("r1").exists()
    assert jobs.names() == []


def test_a_name_is_used_once(jobs, workspace):
    jobs.submit("r1", config())
    with pytest.raises(NameTaken):
        jobs.submit("r1", config())
    (workspace.runs_dir / "from-the-cli").mkdir()
    with pytest.raises(NameTaken):
        jobs.submit("from-the-cli", config())


def test_stopping_a_queued_step_of_a_complete_run_keeps_it_complete(jobs, workspace):
    jobs.submit("r1", config())
    jobs.start()
    wait_for(jobs, "r1", ("complete",))
    behave(workspace, long="hang")
    start_training_until_stopped(jobs, workspace, "long")  # holds the queue, so the step below waits
    jobs.add_action("r1", ["quantize", str(workspace.run_dir("r1")), "--method", "dynamic-int8"])
    stopped = jobs.stop("r1")
    assert stopped.status == "complete" and stopped.actions == [] and "cancelled" in stopped.message
    jobs.stop("long")
