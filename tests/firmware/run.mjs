// Runs firmware test scenarios under real MicroPython (the WebAssembly port), one fresh
// interpreter per scenario, and prints their results as JSON.
//
//   node tests/firmware/run.mjs < scenarios.json
//
// Input: {"scenarios": [{"name": "...", "mounts": [["host/dir", "/board/dir"], ...], "code": "..."}]}
// Output: [{"name", "results": [...], "error": null | "traceback", "output": "printed text"}]
// A scenario reports with print("@@RESULT " + json); anything else it prints is kept as output.
// With "repeat": n and "step": "code", the step is run n times after "code", and after each
// the live heap (gc.mem_alloc() after gc.collect()) is reported as a result; then "after" runs.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const MARK = "@@RESULT ";

function mkdirs(FS, dir) {
  let path = "";
  for (const part of dir.split("/").filter(Boolean)) {
    path += "/" + part;
    try { FS.mkdir(path); } catch (e) { /* exists */ }
  }
}

function copyTree(FS, hostDir, boardDir) {
  mkdirs(FS, boardDir);
  for (const name of readdirSync(hostDir)) {
    const host = join(hostDir, name);
    const board = (boardDir === "/" ? "" : boardDir) + "/" + name;
    if (statSync(host).isDirectory()) {
      if (name !== "__pycache__") copyTree(FS, host, board);
    } else if (name.endsWith(".py") || name.endsWith(".json")) {
      FS.writeFile(board, readFileSync(host));
    }
  }
}

async function runScenario(scenario) {
  let output = "";
  const results = [];
  const mp = await loadMicroPython({
    heapsize: 4 * 1024 * 1024,
    stdout: (line) => {
      if (line.startsWith(MARK)) results.push(JSON.parse(line.slice(MARK.length)));
      else output += line + "\n";
    },
    stderr: (line) => { output += line + "\n"; },
  });
  for (const [host, board] of scenario.mounts) copyTree(mp.FS, host, board);
  let error = null;
  try {
    mp.runPython("import os, sys\nos.chdir('/')\nsys.path[:] = ['', '/lib', '/stubs', '/tests']\n");
    mp.runPython(scenario.code);
    // Live heap: MicroPython's collector scans the WebAssembly stack conservatively, so a
    // collection inside a long Python call can see stale pointers. Measure between calls instead.
    for (let i = 0; i < (scenario.repeat || 0); i++) {
      mp.runPython(scenario.step);
      for (let j = 0; j < 3; j++) mp.runPython("import gc\ngc.collect()");
      mp.runPython("print('" + MARK + "' + str(gc.mem_alloc()))");
    }
    if (scenario.after) mp.runPython(scenario.after);
  } catch (err) {
    error = String(err.message || err);
  }
  return { name: scenario.name, results, error, output };
}

const input = JSON.parse(readFileSync(0, "utf8"));
const answers = [];
for (const scenario of input.scenarios) answers.push(await runScenario(scenario));
process.stdout.write(JSON.stringify(answers));
