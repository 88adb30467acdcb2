"""Which version of the app a board runs, and going back by itself when a new one fails.

A board updated from afar (docs/updates.md, "On a board") keeps its versions side by side
in flash and starts one of them. ``/boot.py`` calls :func:`start` at every power-on, before
anything of the app is loaded, so the heap is still empty when an update has to be done.

The flash::

    /boot.py             calls versions.start(); never changed by an update
    /main.py, tray.py..  the version jisaku flash put on ("installed"); never changed either
    /lib/                jisaku's library, this file and updater.py among it
    /config.json         as written by jisaku flash ("server": where bundles are downloaded)
    /app/state.json      THE pointer: which version starts, the trial, finished offers
    /app/1.4.0/          a downloaded version: its main.py and its other files
    /app/1.3.0/          the one it replaced, kept until the next update
    /update/offer.json   an offer waiting for the next start (updater.py downloads it)

``/app/state.json`` looks like this (null is the installed version at the root)::

    {"active": "1.4.0", "previous": null, "done": [11, 12],
     "trial": {"offer": 12, "version": "1.4.0", "from": null, "trial_s": 300, "starts": 1}}

Why a power cut at any moment leaves a board that starts:

- Only ``/app/state.json`` says which version starts, and it is replaced whole: written to
  ``state.json.tmp`` and renamed over it. LittleFS (ESP32, Pico W) renames atomically, so
  after a cut the file is the old one or the new one, never half of each.
- A new version is downloaded into its own folder, which no pointer names yet; the running
  version's files are never written. Cut during the download: the old version starts and the
  download goes on from what is on flash.
- The switch is that one rename. Before it the old version starts; after it the new one
  starts on trial. The installed version at the root is never touched, and if anything in
  here fails (a missing folder, a state file that cannot be read) boot.py ends and
  MicroPython runs /main.py: the installed version. A board is never left without an app.
- On trial, every start is counted in the state *before* the new version is loaded, so a
  version that crashes, hangs (the watchdog resets the board) or loses power while starting
  uses up its starts; after MAX_TRIAL_STARTS the board goes back to the version it came from.
  One that does not get a reading acknowledged by the broker within ``trial_s`` of a start
  is sent back too. (While on trial, :func:`watch_trial` wraps the board's loop and its link's
  sending to see both; a board not on trial carries none of it.)

Example (boot.py)::

    import versions
    main = versions.start()     # "/app/1.4.0/main.py", or None: the installed /main.py
"""

import json
import os
import sys

import machine

STATE = "/app/state.json"
OFFER = "/update/offer.json"
MAX_TRIAL_STARTS = 3        # a new version that fails to start this often goes back
DEFAULT_TRIAL_S = 300
KEEP_DONE = 20              # finished offer ids remembered (the offer is retained: it comes again)


# ---------------------------------------------------------------- small flash helpers


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def is_folder(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def remove_tree(path):
    """Delete a file or a folder with everything in it; nothing if it is not there."""
    if is_folder(path):
        for name in os.listdir(path):
            remove_tree(path + "/" + name)
        os.rmdir(path)
    elif exists(path):
        os.remove(path)


def make_folders(path):
    """Make ``path`` and the folders above it, like mkdir -p."""
    built = ""
    for part in path.strip("/").split("/"):
        built += "/" + part
        if not is_folder(built):
            os.mkdir(built)


def write_json(path, value):
    # The old file stays whole until the rename replaces it at once (see the docstring).
    make_folders(path.rsplit("/", 1)[0])
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(path + ".tmp", path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return None


# ---------------------------------------------------------------- the state


def read_state():
    """The board's versions; a board that was never updated runs the installed one (None)."""
    try:
        state = read_json(STATE)
    except ValueError:
        print("jisaku: %s is damaged; starting the installed version" % STATE)
        state = None
    if not isinstance(state, dict):
        state = {}
    state.setdefault("active", None)
    state.setdefault("previous", None)
    state.setdefault("trial", None)
    state.setdefault("done", [])
    return state


def write_state(state):
    state["done"] = state["done"][-KEEP_DONE:]
    write_json(STATE, state)


def folder_of(version):
    return "/" if version is None else "/app/" + version


def report(state_name, offer, values=None):
    """Put an ``update`` event in the outbox (flash): the app's link sends it once online.

    The board has no clock this early, so the gateway stamps it when it arrives.
    """
    import outbox
    import protocol
    v = {"offer": offer["offer"], "version": offer["version"], "state": state_name}
    if values:
        v.update(values)
    protocol.event(0, "update", v)  # a wrong value fails here, not at the gateway
    box = outbox.Outbox("/outbox")
    box.put("event", {"event": "update", "v": v})
    box.save(force=True)
    print("jisaku: update %s %s: %s %s" % (offer["offer"], offer["version"], state_name, values or ""))


def finish(state, offer_id):
    if offer_id not in state["done"]:
        state["done"].append(offer_id)


# ---------------------------------------------------------------- an offer, while the app runs


def offered(link, payload):
    """An offer arrived on ``jisaku/<id>/update`` (link.py calls this, importing it then only).

    A new offer is saved to flash and the board restarts, so the update runs at the next start
    with the whole heap free. An offer already finished, or for the version that runs, is
    ignored: it is retained and comes again at every reconnect.
    """
    try:
        offer = json.loads(payload)
        offer_id, version = offer["offer"], offer["version"]
    except (ValueError, KeyError, TypeError):
        print("jisaku: ignored an update offer that is not {\"offer\": id, \"version\": ...}")
        return
    state = read_state()
    if offer_id in state["done"] or version == state["active"] or state["trial"]:
        # Done, running it already, or trying another (it comes again later): let go of
        # this module's code, so the steady loop's heap is as it was.
        sys.modules.pop("versions", None)
        return
    waiting = read_json(OFFER)
    if not (waiting and waiting.get("offer") == offer_id):
        write_json(OFFER, offer)
    print("jisaku: update %s to version %s offered; restarting to install it" % (offer_id, version))
    link.outbox.save(True)  # what waits in memory goes to flash first
    machine.reset()


# ---------------------------------------------------------------- at every start


def start():
    """What boot.py calls: finish a trial or an update, then say which main.py to run.

    Returns the path of the version's main.py, with everything ready to run it (sys.path,
    the trial's watch), or None when the installed version (/main.py) should run.
    """
    # The board's own folders at the root (/outbox) must not hide jisaku's modules of the same
    # name: MicroPython takes a folder for a package, and '' (the root) comes before /lib.
    if "/lib" in sys.path:
        sys.path.remove("/lib")
        sys.path.insert(0, "/lib")
    state = read_state()
    if state["trial"]:
        state = count_trial_start(state)
    elif exists(OFFER):
        import gc
        gc.collect()
        offer = read_json(OFFER)
        try:
            import updater   # only now: the update needs the heap the app would use
            updater.install(offer, state)   # resets the board after a switch
        except Exception as err:  # a mistake in the updater must not stop the board for good
            sys.print_exception(err)
            remove_tree("/update")
            if isinstance(offer, dict) and "offer" in offer and "version" in offer:
                report("refused", offer, {"reason": "download", "detail": ("the updater failed: %r" % err)[:256]})
                finish(state, offer["offer"])
                write_state(state)
        sys.modules.pop("updater", None)
        state = read_state()
    main = prepare(state)
    del sys.modules["versions"]  # boot.py lets go of it too: the app gets the heap
    return main


def count_trial_start(state):
    """One more start of a version on trial; back to the version before if it failed."""
    trial = state["trial"]
    trial["starts"] = trial.get("starts", 0) + 1
    failed = trial.get("failed")
    if failed is None and trial["starts"] > MAX_TRIAL_STARTS:
        failed = "crash"
    if failed is None:
        write_state(state)  # counted before the new version loads: a crash cannot skip it
        return state
    offer = {"offer": trial["offer"], "version": trial["version"]}
    why = {"no_report": "not online with a reading acknowledged within %s s of starting" % trial["trial_s"],
           "crash": "failed to start %d times" % MAX_TRIAL_STARTS}
    report("rolled_back", offer, {"reason": failed, "detail": why.get(failed, failed)})
    state["active"] = trial["from"]
    state["previous"] = None
    state["trial"] = None
    finish(state, trial["offer"])
    write_state(state)
    remove_tree(folder_of(trial["version"]))  # a leftover after a power cut goes at the next update
    return state


def prepare(state):
    """The active version's main.py, ready to run; None for the installed one at the root."""
    version = state["active"]
    if version is None:
        return None
    folder = folder_of(version)
    if not exists(folder + "/main.py"):
        print("jisaku: %s/main.py is missing; starting the installed version" % folder)
        return None
    import link
    link.VERSION = version           # the status says which version runs
    sys.path.insert(0, folder)       # the version's own files first (it may bring its own lib files)
    if state["trial"]:
        watch_trial(state)
    return folder + "/main.py"


# ---------------------------------------------------------------- a new version on trial


class TrialWatch:
    """A new version on trial: its deadline, and the word that it works.

    While on trial, the board's loop and its link's sending are wrapped (see watch_trial), so a
    board that is not on trial carries no trial code at all.
    """

    def __init__(self, trial):
        self.trial = trial
        self.started = ticks_ms()
        self.done = False

    def check_deadline(self):
        """Called after every turn of the loop: past trial_s without a reading acknowledged, go back."""
        if self.done or elapsed_ms(self.started) <= self.trial["trial_s"] * 1000:
            return
        self.done = True
        state = read_state()
        if state["trial"]:
            state["trial"]["failed"] = "no_report"
            write_state(state)
        print("jisaku: version %s did not get online within %s s; going back"
              % (self.trial["version"], self.trial["trial_s"]))
        machine.reset()

    def reading_acked(self, link_object):
        """The broker acknowledged a reading taken since this start: the new version works."""
        if self.done:
            return
        self.done = True
        state = read_state()
        state["trial"] = None
        finish(state, self.trial["offer"])
        write_state(state)
        link_object.publish_event("update", {"offer": self.trial["offer"], "version": self.trial["version"],
                                             "state": "running"})
        link_object.outbox.save(True)  # the word that it works survives a power cut
        print("jisaku: version %s is running" % self.trial["version"])


def ticks_ms():
    import clock
    return clock.ticks_ms()


def elapsed_ms(since):
    import clock
    return clock.elapsed_ms(since)


def watch_trial(state):
    """Wrap the board's loop (the deadline) and its link's sending (running) for this trial."""
    import board
    import link
    # From now on a version that hangs while starting is reset by the watchdog (the app's
    # Board makes it again with its own timeout).
    machine.WDT(timeout=8000)
    watch = TrialWatch(state["trial"])
    turn = board.Board.turn
    send_batch = link.Link._send_batch

    def turn_on_trial(board_object):
        turn(board_object)
        watch.check_deadline()

    def send_batch_on_trial(link_object):
        # Which batch goes next, and whether it was taken since this start (not an old backlog).
        batch = link_object.outbox.next_batch()
        fresh = link_object.outbox.from_this_boot()
        sent = send_batch(link_object)   # returns once the broker acknowledged it (PUBACK)
        if sent and fresh and batch[0] == "data":
            board.Board.turn = turn          # the trial is over: board and link are as always
            link.Link._send_batch = send_batch
            watch.reading_acked(link_object)
        return sent

    board.Board.turn = turn_on_trial
    link.Link._send_batch = send_batch_on_trial
