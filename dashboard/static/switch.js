/* The device page's switching section: follows each command that is still "sent" until the
   device answers, without reloading the page.

   Why: a switch takes a second or two to reach a board and come back; the operator should
   see "done", "refused (why)" or "no answer" where they pressed, not reload to find out.
   Every element with data-follow="<command id>" is updated from
   GET /api/v1/operator/commands/<id> once a second; when the device says "done", the
   output's state in the table is updated from what the device reported (its result).
   The words come from the page (#switch-words), so the page's language is kept. */
(function () {
  "use strict";

  const EVERY_MS = 1000;
  const words = document.getElementById("switch-words");
  if (!words) return;
  const LOOK = {sent: "pending", done: "applied", refused: "refused", no_answer: "refused"};

  function word(key) {
    return words.dataset[key] || key;
  }

  function show(element, command) {
    const status = document.createElement("span");
    status.className = "state state-" + LOOK[command.status] + " command-" + command.status;
    status.textContent = word(command.status);
    element.replaceChildren(status);
    if (command.status === "refused") {
      const why = document.createElement("span");
      why.className = "command-why";
      // data-code-interlock="…" is dataset.codeInterlock; a code the page has no word for shows as it is
      const code = command.code || "";
      const key = "code" + code.charAt(0).toUpperCase() + code.slice(1);
      why.textContent = " " + (words.dataset[key] || code) + (command.reason ? ": " + command.reason : "");
      element.appendChild(why);
    }
  }

  function showOutputs(result) {
    if (!result || typeof result !== "object") return;
    for (const [name, on] of Object.entries(result)) {
      const row = document.querySelector('#outputs-table tr[data-output="' + CSS.escape(name) + '"]');
      const cell = row && row.querySelector(".output-state");
      if (!cell) continue;
      const text = on ? word("on") : word("off");
      if (on) {
        const strong = document.createElement("strong");
        strong.textContent = text;
        cell.replaceChildren(strong);
      } else {
        cell.textContent = text;
      }
    }
  }

  async function follow(element) {
    const id = element.dataset.follow;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, EVERY_MS));
      let answer;
      try {
        answer = await fetch("/api/v1/operator/commands/" + encodeURIComponent(id),
                             {credentials: "same-origin", headers: {Accept: "application/json"}});
      } catch (err) {
        continue; // the network blinked: ask again
      }
      if (answer.status === 401 || answer.status === 403 || answer.status === 404) return;
      if (!answer.ok) continue;
      const command = (await answer.json()).command;
      for (const same of document.querySelectorAll('[data-follow="' + CSS.escape(id) + '"]')) show(same, command);
      if (command.status !== "sent") {
        if (command.status === "done") showOutputs(command.result);
        return;
      }
    }
  }

  const seen = new Set();
  for (const element of document.querySelectorAll("[data-follow]")) {
    if (seen.has(element.dataset.follow)) continue; // the notice and the table row follow one command
    seen.add(element.dataset.follow);
    follow(element);
  }
})();
