// The resident counter's queue, in the browser: ticket numbers, calls at the windows,
// and the waiting estimate. The same class as kinds/counter/queue.py, line for line, for
// the staff web page of a town that has no buttons. Both are held to the same test
// vectors (tests/vectors/ticket_queue.json): change one, change the other.
//
// No build step, no dependencies. Times are epoch seconds (Date.now() / 1000), passed in,
// so a test says exactly what time it is. Method names are JavaScript's (callNext); the
// data keys are the reading's own names (estimate_min, window_1), the same as Python's.
//
// How the estimate works, and why the mean and not the median: see queue.py.
//
// Example (in a page, keeping the queue in localStorage across reloads):
//
//   var saved = localStorage.getItem("jisaku-counter");
//   var queue = saved ? TicketQueue.fromJSON(JSON.parse(saved)) : new TicketQueue({ windows: 2 });
//   var ticket = queue.take(Date.now() / 1000);        // {number: 1, estimate_min: 0, waiting_before: 0, taken: ...}
//   queue.callNext(1, Date.now() / 1000);              // 1
//   localStorage.setItem("jisaku-counter", JSON.stringify(queue));   // JSON.stringify uses toJSON()

(function () {
  "use strict";

  var SAMPLES_KEPT = 20;        // service times remembered per window ("recent")
  var OWN_SAMPLES_NEEDED = 3;   // fewer than this at a window: use all windows' together
  var STATE_FORMAT = 1;
  var AVERAGES = ["mean", "median"];

  // One decimal, halves up: the same as queue.py's round1 (Math.round is not the same on negatives).
  function round1(value) {
    return Math.floor(value * 10 + 0.5) / 10;
  }

  function copy(record) {
    return record === null ? null : Object.assign({}, record);
  }

  // options: {windows: 2, minutes_per_person: 5, utc_offset_s: null (this browser's zone), average: "mean"}
  function TicketQueue(options) {
    options = options || {};
    var windows = options.windows === undefined ? 2 : options.windows;
    var average = options.average === undefined ? "mean" : options.average;
    if (!(Math.floor(windows) >= 1)) throw new Error("a queue needs at least one window, not " + windows);
    if (AVERAGES.indexOf(average) < 0) throw new Error("average must be one of mean, median, not " + average);
    this.windows = Math.floor(windows);
    this.minutes_per_person = options.minutes_per_person === undefined ? 5 : Number(options.minutes_per_person);
    this.utc_offset_s = options.utc_offset_s === undefined ? null : options.utc_offset_s;
    this.average = average;
    this.day = null;             // the local day the numbers belong to (days since 1970)
    this.issued = 0;             // the last number handed out today
    this.waiting = [];           // {number, taken, estimate_min}, lowest number first
    this.serving = [];           // per window: {number, since, taken, estimate_min} or null
    this.service_s = [];         // per window: recent service times in seconds, oldest first
    for (var i = 0; i < this.windows; i++) {
      this.serving.push(null);
      this.service_s.push([]);
    }
    this.last_call = null;       // {number, window, waited_min, estimate_min}
  }

  // ------------------------------------------------------------ what the buttons do

  // A resident takes a ticket: {number, estimate_min, waiting_before, taken}.
  TicketQueue.prototype.take = function (now) {
    this._startDayIfNew(now);
    var estimate = this.estimateMin(now);
    var waitingBefore = this.waiting.length;
    this.issued += 1;
    this.waiting.push({ number: this.issued, taken: now, estimate_min: estimate });
    return { number: this.issued, estimate_min: estimate, waiting_before: waitingBefore, taken: now };
  };

  // A window presses "next": its resident (if any) is done; the lowest waiting number is called.
  // The number called, or null when nobody waits.
  TicketQueue.prototype.callNext = function (window, now) {
    var index = this._index(window);
    this._startDayIfNew(now);
    var current = this.serving[index];
    if (current !== null) {
      this._rememberService(index, now - current.since);
      this.serving[index] = null;
    }
    if (this.waiting.length === 0) return null;
    var ticket = this.waiting.shift();
    this.serving[index] = { number: ticket.number, since: now, taken: ticket.taken, estimate_min: ticket.estimate_min };
    this.last_call = { number: ticket.number, window: window, waited_min: round1((now - ticket.taken) / 60),
                       estimate_min: ticket.estimate_min };
    return ticket.number;
  };

  // A window presses "call again": the number it is serving, or null.
  TicketQueue.prototype.callAgain = function (window, now) {
    var index = this._index(window);
    this._startDayIfNew(now);
    var current = this.serving[index];
    return current === null ? null : current.number;
  };

  // ------------------------------------------------------------ what it tells

  // How long a ticket taken now will wait, in minutes (one decimal).
  TicketQueue.prototype.estimateMin = function (now) {
    this._startDayIfNew(now);
    var typical = this.typicalServiceS();
    var freeIn = [];  // seconds from now until each window is free
    for (var i = 0; i < this.windows; i++) {
      var current = this.serving[i];
      freeIn.push(current === null ? 0 : Math.max(typical[i] - (now - current.since), typical[i] / 2));
    }
    for (var n = 0; n < this.waiting.length; n++) {  // each person ahead to the window free first
      var first = lowest(freeIn);
      freeIn[first] += typical[first];
    }
    return round1(freeIn[lowest(freeIn)] / 60);
  };

  // The index of the smallest value; the first one on a tie (as Python's list.index(min(...))).
  function lowest(values) {
    var best = 0;
    for (var i = 1; i < values.length; i++) if (values[i] < values[best]) best = i;
    return best;
  }

  // Each window's typical service time, in seconds.
  TicketQueue.prototype.typicalServiceS = function () {
    var everyone = [];
    this.service_s.forEach(function (samples) { everyone = everyone.concat(samples); });
    var typical = [];
    for (var i = 0; i < this.windows; i++) {
      if (this.service_s[i].length >= OWN_SAMPLES_NEEDED) typical.push(this._average(this.service_s[i]));
      else if (everyone.length) typical.push(this._average(everyone));
      else typical.push(this.minutes_per_person * 60);
    }
    return typical;
  };

  // The reading: {waiting, estimate_min, issued, windows, window_1, ..., last_wait_min (after a call)}.
  TicketQueue.prototype.state = function (now) {
    this._startDayIfNew(now);
    var values = { waiting: this.waiting.length, estimate_min: this.estimateMin(now), issued: this.issued,
                   windows: this.windows };
    for (var i = 0; i < this.windows; i++) {
      values["window_" + (i + 1)] = this.serving[i] === null ? 0 : this.serving[i].number;
    }
    if (this.last_call !== null) values.last_wait_min = this.last_call.waited_min;
    return values;
  };

  // ------------------------------------------------------------ keeping it across a reload

  // The same layout as queue.py's to_dict().
  TicketQueue.prototype.toJSON = function () {
    return { format: STATE_FORMAT, windows: this.windows, minutes_per_person: this.minutes_per_person,
             average: this.average, day: this.day, issued: this.issued,
             waiting: this.waiting.map(copy), serving: this.serving.map(copy),
             service_s: this.service_s.map(function (samples) { return samples.slice(); }),
             last_call: copy(this.last_call) };
  };

  // A queue carrying on from toJSON(); windows (optional) overrides the saved count.
  TicketQueue.fromJSON = function (data, windows, utcOffsetS) {
    if (data.format !== STATE_FORMAT) {
      throw new Error("a saved queue of format " + data.format + "; this code reads " + STATE_FORMAT);
    }
    var count = windows === undefined || windows === null ? data.windows : windows;
    var queue = new TicketQueue({ windows: count, minutes_per_person: data.minutes_per_person,
                                  utc_offset_s: utcOffsetS === undefined ? null : utcOffsetS,
                                  average: data.average || "mean" });
    queue.day = data.day;
    queue.issued = data.issued;
    queue.waiting = data.waiting.map(copy);
    for (var i = 0; i < queue.windows; i++) {
      queue.serving[i] = i < data.serving.length ? copy(data.serving[i]) : null;
      queue.service_s[i] = i < data.service_s.length ? data.service_s[i].slice() : [];
    }
    queue.last_call = copy(data.last_call);
    return queue;
  };

  // ------------------------------------------------------------ inside

  // Days since 1970-01-01 in local time: numbers restart when this changes.
  TicketQueue.prototype.localDay = function (now) {
    var offset = this.utc_offset_s !== null ? this.utc_offset_s : -new Date(now * 1000).getTimezoneOffset() * 60;
    return Math.floor((now + offset) / 86400);
  };

  TicketQueue.prototype._startDayIfNew = function (now) {
    var day = this.localDay(now);
    if (day === this.day) return;
    // A new day: number 1 again, nobody waiting or served. The service times stay.
    this.day = day;
    this.issued = 0;
    this.waiting = [];
    this.last_call = null;
    for (var i = 0; i < this.windows; i++) this.serving[i] = null;
  };

  TicketQueue.prototype._rememberService = function (index, seconds) {
    if (seconds <= 0) return;  // the clock was set back: no real service time
    var samples = this.service_s[index];
    samples.push(seconds);
    if (samples.length > SAMPLES_KEPT) samples.splice(0, samples.length - SAMPLES_KEPT);
  };

  TicketQueue.prototype._average = function (samples) {
    if (this.average === "median") {
      var ordered = samples.slice().sort(function (a, b) { return a - b; });
      var middle = Math.floor(ordered.length / 2);
      return ordered.length % 2 ? ordered[middle] : (ordered[middle - 1] + ordered[middle]) / 2;
    }
    var total = 0;
    for (var i = 0; i < samples.length; i++) total += samples[i];  // in order, as queue.py
    return total / samples.length;
  };

  TicketQueue.prototype._index = function (window) {
    if (typeof window !== "number" || Math.floor(window) !== window || window < 1 || window > this.windows) {
      throw new Error("window must be 1 to " + this.windows + ", not " + window);
    }
    return window - 1;
  };

  if (typeof window !== "undefined") window.TicketQueue = TicketQueue;
  if (typeof module !== "undefined") module.exports = { TicketQueue: TicketQueue };
})();
