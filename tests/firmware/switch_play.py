"""Plays tests/vectors/switching.json through switchboard.py: the same code on CPython and MicroPython.

Test-only. ``play(switchboard, cases)`` returns, for every case, a record of every step
(states, pin levels, changes, the answer or the schedule's problems), or the error the
config raised; tests/test_switching.py compares the two runtimes' records and each
step's ``expect``.
"""

TICK_S = 10


def record(board, step, answer=None, problems=None):
    levels = {}
    for name in board.order:
        levels[name] = board.outputs[name].level(board.on[name])
    found = {"states": board.states(), "levels": levels, "changes": board.take_changes(),
             "schedule": board.schedule_state()}
    if step["do"] == "cmd":
        found["answer"] = answer
    if step["do"] == "schedule":
        found["problems"] = problems
    return found


def play_case(switchboard, case):
    clock = switchboard.DrivenClock(case["clock"]["unix"], case["clock"]["utc_offset_s"])
    try:
        board = switchboard.SwitchBoard.from_config(case["config"], clock)
    except switchboard.SwitchError as err:
        return {"error": str(err)}
    link = True
    steps = []
    for step in case["steps"]:
        answer = problems = None
        if step["do"] == "start":
            board.start()
        elif step["do"] == "fault":
            board.safe_all("fault")
        elif step["do"] == "cmd":
            answer = board.command(step["cmd"])
        elif step["do"] == "schedule":
            problems = board.check_schedule(step["entries"])
            if not problems:
                board.set_schedule(step["entries"])
        elif step["do"] == "set_clock":
            clock.unix_s = step["unix"]
        elif step["do"] == "wait":
            link = step.get("link", link)
            board.tick(link)
            left = step["s"]
            while left > 0:
                clock.advance(min(TICK_S, left))
                left -= TICK_S
                board.tick(link)
        steps.append(record(board, step, answer, problems))
    return {"steps": steps}


def play(switchboard, cases):
    return [play_case(switchboard, case) for case in cases]
