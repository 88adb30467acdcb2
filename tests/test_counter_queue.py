"""The resident counter's queue: Python and JavaScript held to the same vectors, and its state file.

``tests/vectors/ticket_queue.json`` says what each step of each scenario must give;
kinds/counter/queue.py (on the Pi) and dashboard/static/ticket_queue.js (the staff web
page) are both run against it, and must also agree with each other on every output and
on the saved state, so a town can move from the web page to buttons and back.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess

import pytest

from jisaku.kinds.counter.queue import TicketQueue, round1

from .conftest import require
from .town import REPO

VECTORS = json.loads((REPO / "tests" / "vectors" / "ticket_queue.json").read_text(encoding="utf-8"))
SCENARIOS = VECTORS["scenarios"]
SCRIPT = REPO / "dashboard" / "static" / "ticket_queue.js"

# Runs the same steps with the JavaScript class: scenarios on stdin, outputs on stdout.
NODE_RUNNER = r"""
const { TicketQueue } = require(process.argv[1]);
const scenarios = JSON.parse(require("fs").readFileSync(0, "utf8"));
const results = scenarios.map(function (scenario) {
  const o = scenario.options;
  let queue = new TicketQueue({ windows: o.windows, minutes_per_person: o.minutes_per_person,
                                utc_offset_s: o.utc_offset_s, average: o.average });
  const outputs = scenario.steps.map(function (step) {
    try {
      switch (step.do) {
        case "take": { const t = queue.take(step.at);
                       return { number: t.number, estimate_min: t.estimate_min, waiting_before: t.waiting_before }; }
        case "call_next": return queue.callNext(step.window, step.at);
        case "call_again": return queue.callAgain(step.window, step.at);
        case "estimate": return queue.estimateMin(step.at);
        case "state": return queue.state(step.at);
        case "restore":
          queue = TicketQueue.fromJSON(JSON.parse(JSON.stringify(queue)), step.windows, o.utc_offset_s);
          return null;
      }
      throw new Error("unknown step " + step.do);
    } catch (err) {
      return { error: String(err.message) };
    }
  });
  return { outputs: outputs, saved: queue.toJSON() };
});
process.stdout.write(JSON.stringify(results));
"""


def epoch(local: str, utc_offset_s: int) -> float:
    """ "2025-04-07 08:30:00" in the scenario's zone, as epoch seconds."""
    zone = datetime.timezone(datetime.timedelta(seconds=utc_offset_s))
    return datetime.datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).timestamp()


def with_epochs(scenario: dict) -> dict:
    offset = scenario["options"]["utc_offset_s"]
    steps = [{**step, "at": epoch(step["at"], offset)} if "at" in step else step for step in scenario["steps"]]
    return {**scenario, "steps": steps}


def run_python(scenario: dict) -> dict:
    options = scenario["options"]
    queue = TicketQueue(options["windows"], options["minutes_per_person"], options["utc_offset_s"],
                        options.get("average", "mean"))
    outputs = []
    for step in scenario["steps"]:
        try:
            if step["do"] == "take":
                ticket = queue.take(step["at"])
                outputs.append({"number": ticket.number, "estimate_min": ticket.estimate_min,
                                "waiting_before": ticket.waiting_before})
            elif step["do"] == "call_next":
                outputs.append(queue.call_next(step["window"], step["at"]))
            elif step["do"] == "call_again":
                outputs.append(queue.call_again(step["window"], step["at"]))
            elif step["do"] == "estimate":
                outputs.append(queue.estimate_min(step["at"]))
            elif step["do"] == "state":
                outputs.append(queue.state(step["at"]))
            elif step["do"] == "restore":
                saved = json.loads(json.dumps(queue.to_dict()))
                queue = TicketQueue.from_dict(saved, step.get("windows"), options["utc_offset_s"])
                outputs.append(None)
            else:
                raise AssertionError(f"unknown step {step['do']}")
        except ValueError as err:
            outputs.append({"error": str(err)})
    return {"outputs": outputs, "saved": queue.to_dict()}


@pytest.fixture(scope="module")
def javascript() -> list[dict]:
    """Every scenario run by the JavaScript class, in one Node process."""
    node = shutil.which("node")
    require(node is not None, "Node.js", "sudo apt-get install nodejs")
    done = subprocess.run([node, "-e", NODE_RUNNER, str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          input=json.dumps([with_epochs(s) for s in SCENARIOS]), env={**os.environ, "TZ": "UTC"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check(outputs: list, scenario: dict, who: str) -> None:
    for step, output in zip(scenario["steps"], outputs, strict=True):
        where = f"{who}, {scenario['name']}: {step['do']} at {step.get('at')}"
        if step.get("expect_error"):
            assert isinstance(output, dict) and "error" in output, f"{where} should refuse, gave {output!r}"
        elif "expect" in step:
            assert output == step["expect"], f"{where}"


@pytest.mark.parametrize("index", range(len(SCENARIOS)), ids=[s["name"] for s in SCENARIOS])
def test_python_gives_what_the_vectors_say(index):
    scenario = with_epochs(SCENARIOS[index])
    check(run_python(scenario)["outputs"], scenario, "Python")


@pytest.mark.parametrize("index", range(len(SCENARIOS)), ids=[s["name"] for s in SCENARIOS])
def test_javascript_gives_what_the_vectors_say_and_the_same_as_python(index, javascript):
    scenario = with_epochs(SCENARIOS[index])
    check(javascript[index]["outputs"], scenario, "JavaScript")
    python = run_python(scenario)
    # Not only the expected steps: every output, and the saved state, exactly the same.
    same = [None if isinstance(o, dict) and "error" in o else o for o in python["outputs"]]
    theirs = [None if isinstance(o, dict) and "error" in o else o for o in javascript[index]["outputs"]]
    assert theirs == same
    assert javascript[index]["saved"] == python["saved"]


def test_the_vectors_cover_every_step_and_both_averages():
    steps = {step["do"] for s in SCENARIOS for step in s["steps"]}
    assert steps == {"take", "call_next", "call_again", "estimate", "state", "restore"}
    assert {s["options"].get("average", "mean") for s in SCENARIOS} == {"mean", "median"}
    expected = sum(1 for s in SCENARIOS for step in s["steps"] if "expect" in step or "expect_error" in step)
    assert expected >= 100, "nearly every step says what it must give"


def test_the_javascript_works_in_a_browser_page_too():
    """No module system in a page: the class must land on window (a script tag, no build step)."""
    node = shutil.which("node")
    require(node is not None, "Node.js", "sudo apt-get install nodejs")
    page = ("const window = {}; const module = undefined;\n" + SCRIPT.read_text(encoding="utf-8") +
            "\nconst q = new window.TicketQueue({windows: 1, utc_offset_s: 32400});"
            "\nprocess.stdout.write(JSON.stringify(q.take(1744000000)));")
    done = subprocess.run([node, "-e", page], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["number"] == 1


# ---------------------------------------------------------------- the state file


def test_state_survives_a_save_and_load_and_the_setting_wins(tmp_path):
    path = tmp_path / "counter.json"
    queue = TicketQueue(windows=2, minutes_per_person=5, utc_offset_s=32400)
    start = epoch("2025-04-07 08:30:00", 32400)
    for i in range(3):
        queue.take(start + i)
    queue.call_next(1, start + 60)
    queue.save(path)
    assert not path.with_name("counter.json.tmp").exists(), "the temporary file was renamed over"

    again = TicketQueue.load(path, windows=2, minutes_per_person=5, utc_offset_s=32400)
    assert again.to_dict() == queue.to_dict()
    assert again.state(start + 90) == queue.state(start + 90)
    assert again.take(start + 100).number == 4
    changed = TicketQueue.load(path, windows=2, minutes_per_person=7, utc_offset_s=32400)
    assert changed.minutes_per_person == 7, "the operators' current setting, not the saved one"
    assert changed.estimate_min(start + 90) > queue.estimate_min(start + 90)


def test_a_missing_or_broken_state_file_starts_from_one_and_keeps_the_broken_one(tmp_path, caplog):
    assert TicketQueue.load(tmp_path / "none.json").issued == 0
    broken = tmp_path / "counter.json"
    broken.write_text('{"format": 1, "windows"')   # what a card that failed mid-write could hold
    queue = TicketQueue.load(broken, utc_offset_s=32400)
    assert queue.take(epoch("2025-04-07 09:00:00", 32400)).number == 1
    assert (tmp_path / "counter.json.bad").exists() and "cannot be read" in caplog.text


def test_a_save_interrupted_before_the_rename_leaves_the_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "counter.json"
    queue = TicketQueue(windows=1, utc_offset_s=32400)
    queue.take(epoch("2025-04-07 09:00:00", 32400))
    queue.save(path)
    queue.take(epoch("2025-04-07 09:00:10", 32400))

    def power_cut(*args):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError):
        queue.save(path)
    monkeypatch.undo()
    assert TicketQueue.load(path, windows=1, utc_offset_s=32400).issued == 1


def test_round1_rounds_halves_up_like_javascript():
    assert (round1(0.25), round1(0.35), round1(2.45), round1(-0.05)) == (0.3, 0.4, 2.5, 0.0)
