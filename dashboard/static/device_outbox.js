/* A web page that acts as a device (a shelter's tally on a phone, the counter's web page)
   keeps every message here until the server has it, and sends them oldest first.

   Why: shelter staff tap "+1" on a phone whose mobile link comes and goes. A tap must never
   be lost (so it is written to localStorage before anything else happens) and never counted
   twice (so each message gets its own (ts, seq) once, and a message sent again after a lost
   answer is dropped by the gateway as the duplicate it is). See dashboard/device_posts.py.

   Example:
     const outbox = new DeviceOutbox("shelter-1", secret, {onChange: show});
     outbox.reading({count: 12});          // kept at once; sent when the server answers
     outbox.event("call", {number: 5});

   What onChange gets: {pending, refused, state}, state one of
   "sent" (nothing waits), "sending", "waiting" (no answer: tries again, 1 s doubling to 30 s)
   or "login" (the secret is wrong: nothing is sent until the page logs in again). */
(function (global) {
  "use strict";

  const FIRST_WAIT_MS = 1000;
  const LONGEST_WAIT_MS = 30000;

  class DeviceOutbox {
    constructor(deviceId, secret, options) {
      options = options || {};
      this.deviceId = deviceId;
      this.secret = secret;
      this.storage = options.storage || global.localStorage;
      this.fetch = options.fetch || global.fetch.bind(global);
      this.onChange = options.onChange || function () {};
      this.key = "jisaku.outbox." + deviceId;
      this.state = "sent";
      this.waitMs = FIRST_WAIT_MS;
      this.timer = null;
      this.busy = false;
      // Back online: try at once instead of waiting out the pause.
      if (global.addEventListener) global.addEventListener("online", () => this.sendNow());
      this.sendNow();
    }

    load() {
      const saved = JSON.parse(this.storage.getItem(this.key) || "null");
      return saved || {seq: 0, messages: [], refused: 0};
    }

    save(box) {
      this.storage.setItem(this.key, JSON.stringify(box));
    }

    keep(channel, body) {
      const box = this.load();
      box.seq += 1;
      body.seq = box.seq;
      // Two messages in the same millisecond still differ by seq.
      body.ts = Math.round(Date.now()) / 1000;
      box.messages.push({channel: channel, body: body});
      this.save(box);
      this.sendNow();
    }

    reading(values) {
      this.keep("data", {v: values});
    }

    event(name, values) {
      const body = {event: name};
      if (values) body.v = values;
      this.keep("event", body);
    }

    pending() {
      return this.load().messages.length;
    }

    login(secret) {
      this.secret = secret;
      this.sendNow();
    }

    report(state) {
      this.state = state;
      const box = this.load();
      this.onChange({pending: box.messages.length, refused: box.refused, state: state});
    }

    sendNow() {
      clearTimeout(this.timer);
      this.waitMs = FIRST_WAIT_MS;
      this.sendNext();
    }

    async sendNext() {
      if (this.busy) return;
      const box = this.load();
      if (!box.messages.length) return this.report("sent");
      if (!this.secret) return this.report("login");
      this.busy = true;
      this.report("sending");
      const message = box.messages[0];
      let status = 0;
      try {
        const answer = await this.fetch(
          "/api/v1/devices/" + encodeURIComponent(this.deviceId) + "/" + message.channel, {
            method: "POST",
            headers: {"content-type": "application/json",
                      "authorization": "Basic " + btoa(this.deviceId + ":" + this.secret)},
            body: JSON.stringify(message.body),
          });
        status = answer.status;
      } catch (err) {
        status = 0; // no network, or the server is down
      }
      this.busy = false;
      if (status === 200 || status === 400 || status === 413) {
        this.forget(message, status !== 200);
        this.waitMs = FIRST_WAIT_MS;
        return this.sendNext();
      }
      if (status === 401) return this.report("login");
      this.report("waiting");
      this.timer = setTimeout(() => this.sendNext(), this.waitMs);
      this.waitMs = Math.min(this.waitMs * 2, LONGEST_WAIT_MS);
    }

    forget(message, refused) {
      // 400 and 413 say it breaks the contract: sending it again would never help.
      const box = this.load();
      if (box.messages.length && box.messages[0].body.seq === message.body.seq) box.messages.shift();
      if (refused) box.refused += 1;
      this.save(box);
    }
  }

  global.DeviceOutbox = DeviceOutbox;
})(typeof window !== "undefined" ? window : globalThis);
