#!/usr/bin/env node
// A scripted vibews client built on the `ws` package, for tests/integration/test_node_clients.py.
//
//   VIBEWS_TOKEN=SECRET node client.mjs SCENARIO URL [--via header|subprotocol] [--count N]
//                                                    [--deadline SECONDS]
//
// The token comes from the environment (never argv, where `ps` would show it). `ws` is loaded from
// the node_modules of $VIBEWS_NODE_DIR when set, else of this script's folder.
// Every event is printed on stdout as one JSON line:
//   {"event":"open","protocol":"<selected subprotocol>","extensions":"<negotiated extensions>"}
//   {"event":"message","data":{...}}            one per received message, in order
//   {"event":"unexpected-response","status":N}  the handshake was refused with HTTP N
//   {"event":"close","code":N,"reason":"..."}
//   {"event":"error","message":"..."}           something the scenario did not expect
//   {"event":"timeout","seconds":S}             the hard deadline passed
//
// Scenarios:
//   agent      token in `Authorization: Bearer` (default), wait for `welcome`, send
//              {"type":"agent_status","id":"n1","payload":{"state":"working"}}, wait for the
//              `ack` (or `error`) whose id is "n1", close.
//   dashboard  offer ["vibews.v1", "vibews.token."+token] (default, as a browser does), require the
//              selected subprotocol to be vibews.v1, wait for `welcome`, then for --count relayed
//              data messages (those carrying `from`), close.
//   refused    connect (token in the header by default) and expect the handshake to be refused;
//              prints the HTTP status of the response.
//
// Exit status: 0 the scenario ran to its end (the test judges what was printed), 1 the deadline
// passed, 2 something unexpected happened (see the "error" line), 64 bad usage.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = process.env.VIBEWS_NODE_DIR || path.dirname(fileURLToPath(import.meta.url));
const WebSocket = createRequire(path.join(packageDir, "package.json"))("ws");

const SCENARIOS = new Set(["agent", "dashboard", "refused"]);
const DEFAULT_VIA = { agent: "header", dashboard: "subprotocol", refused: "header" };
const PROTOCOL = "vibews.v1";

function usage(message) {
  process.stderr.write(
    `client.mjs: ${message}\n` +
      "usage: VIBEWS_TOKEN=SECRET node client.mjs agent|dashboard|refused URL " +
      "[--via header|subprotocol] [--count N] [--deadline SECONDS]\n",
  );
  process.exit(64);
}

function parseArgs(argv) {
  const positional = [];
  const options = { count: 1, deadline: 10, via: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const value = argv[++i];
    if (value === undefined) usage(`${arg} needs a value`);
    if (arg === "--via") options.via = value;
    else if (arg === "--count") options.count = Number(value);
    else if (arg === "--deadline") options.deadline = Number(value);
    else usage(`unknown option ${arg}`);
  }
  if (positional.length !== 2) usage("expected SCENARIO and URL");
  const [scenario, url] = positional;
  if (!SCENARIOS.has(scenario)) usage(`unknown scenario ${scenario}`);
  options.via ??= DEFAULT_VIA[scenario];
  if (!["header", "subprotocol"].includes(options.via)) usage(`unknown --via ${options.via}`);
  if (!Number.isInteger(options.count) || options.count < 0) usage("--count must be an integer >= 0");
  if (!(options.deadline > 0)) usage("--deadline must be a positive number of seconds");
  return { scenario, url, ...options };
}

const args = parseArgs(process.argv.slice(2));
const token = process.env.VIBEWS_TOKEN;
if (!token) usage("VIBEWS_TOKEN is not set");

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

let ws = null;
let finished = false;

function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(deadline);
  if (ws !== null) ws.terminate();
  // Exit only once stdout has taken everything printed so far.
  process.stdout.write("", () => process.exit(code));
}

function fail(message) {
  emit({ event: "error", message });
  finish(2);
}

const deadline = setTimeout(() => {
  emit({ event: "timeout", seconds: args.deadline });
  finish(1);
}, args.deadline * 1000);

const headers = {};
const protocols = [];
if (args.via === "header") {
  headers.Authorization = `Bearer ${token}`;
  if (args.scenario === "dashboard") protocols.push(PROTOCOL);
} else {
  protocols.push(PROTOCOL, `vibews.token.${token}`);
}

ws = new WebSocket(args.url, protocols, { headers, handshakeTimeout: args.deadline * 1000 });

// Set once the scenario got everything it waited for: the close that follows is expected.
let done = false;
let welcomed = false;
let relayed = 0;

function closeWhenDone() {
  done = true;
  ws.close(1000, "done");
}

ws.on("unexpected-response", (request, response) => {
  if (finished) return;
  emit({ event: "unexpected-response", status: response.statusCode });
  response.resume();
  if (args.scenario === "refused") finish(0);
  else fail(`handshake refused with HTTP ${response.statusCode}`);
});

ws.on("open", () => {
  emit({ event: "open", protocol: ws.protocol, extensions: ws.extensions });
  if (args.scenario === "refused") {
    fail("the handshake was accepted");
  } else if (args.scenario === "dashboard" && ws.protocol !== PROTOCOL) {
    fail(`selected subprotocol is ${JSON.stringify(ws.protocol)}, not ${PROTOCOL}`);
  }
});

ws.on("message", (raw, isBinary) => {
  if (finished) return;
  if (isBinary) return fail("received a binary message");
  let data;
  try {
    data = JSON.parse(raw.toString("utf8"));
  } catch (error) {
    return fail(`received a message that is not JSON: ${raw.toString("utf8").slice(0, 200)}`);
  }
  emit({ event: "message", data });
  if (done) return;
  if (!welcomed) {
    if (data.type !== "welcome") return fail(`first message is ${data.type}, not welcome`);
    welcomed = true;
    if (args.scenario === "agent") {
      ws.send(JSON.stringify({ type: "agent_status", id: "n1", payload: { state: "working" } }));
    } else if (args.scenario === "dashboard" && args.count === 0) {
      closeWhenDone();
    }
    return;
  }
  if (args.scenario === "agent" && (data.type === "ack" || data.type === "error") && data.id === "n1") {
    closeWhenDone();
  } else if (args.scenario === "dashboard" && typeof data.from === "string") {
    relayed += 1;
    if (relayed >= args.count) closeWhenDone();
  }
});

ws.on("close", (code, reason) => {
  if (finished) return;
  emit({ event: "close", code, reason: reason.toString("utf8") });
  if (done) finish(0);
  else fail(`connection closed before the ${args.scenario} scenario ended`);
});

ws.on("error", (error) => {
  if (!finished) fail(error.message);
});
