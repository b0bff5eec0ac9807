// Baseline for bench/run: the subset of the vibews protocol that the benchmark exercises, on
// Node's `ws`, the way a competent Node developer would write it: Bearer auth in the upgrade
// (401 otherwise), `welcome`, `ack` with `seq`, relay to every dashboard with `from` and `seq`.
// In memory (no durability at all), one JSON.stringify per relayed message for all recipients.
//
// usage: node hub.mjs PORT TOKENS_FILE   (vibews' tokens format: NAME ROLE sha256:HEX)
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const [port, tokensFile] = process.argv.slice(2);
if (!port || !tokensFile) {
  console.error('usage: node hub.mjs PORT TOKENS_FILE');
  process.exit(2);
}

const tokens = new Map(); // sha256 hex -> {name, role}
for (const line of readFileSync(tokensFile, 'utf8').split('\n')) {
  const [name, role, digest] = line.replace(/#.*/, '').trim().split(/\s+/);
  if (digest && digest.startsWith('sha256:')) tokens.set(digest.slice(7), { name, role });
}

let seq = 0;
const dashboards = new Set();
const DATA_TYPES = new Set(['agent_status', 'task_update', 'question']);

const http = createServer((req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 65536 });

http.on('upgrade', (req, socket, head) => {
  const auth = req.headers.authorization || '';
  const identity = auth.startsWith('Bearer ')
    ? tokens.get(createHash('sha256').update(auth.slice(7)).digest('hex'))
    : undefined;
  if (!identity) {
    socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => open(ws, identity));
});

function open(ws, identity) {
  const welcome = {
    name: identity.name,
    role: identity.role,
    connection: randomBytes(8).toString('hex'),
    server: 'node-ws-baseline',
    protocol: 1,
    seq,
    heartbeat: 20,
  };
  if (identity.role === 'dashboard') {
    welcome.snapshot = { agents: {}, questions: [], tasks: {} };
    dashboards.add(ws);
    ws.on('close', () => dashboards.delete(ws));
  }
  ws.send(JSON.stringify({ type: 'welcome', payload: welcome }));
  ws.on('message', (data, isBinary) => receive(ws, identity, data, isBinary));
}

function refuse(ws, id, code, message) {
  ws.send(JSON.stringify({ type: 'error', id: id ?? null, payload: { code, message } }));
}

function receive(ws, identity, data, isBinary) {
  if (isBinary) {
    ws.close(1003, 'binary frames are not accepted');
    return;
  }
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    refuse(ws, null, 'invalid_json', 'not JSON');
    return;
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    refuse(ws, null, 'invalid_message', 'not an object');
    return;
  }
  if (msg.type === 'ack') return;
  if (!DATA_TYPES.has(msg.type)) {
    refuse(ws, msg.id, 'unknown_type', `unknown type ${msg.type}`);
    return;
  }
  if (identity.role !== 'agent') {
    refuse(ws, msg.id, 'forbidden', 'only agents send this');
    return;
  }
  const payload = msg.payload;
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    refuse(ws, msg.id, 'invalid_message', 'payload must be an object');
    return;
  }
  if (msg.type === 'agent_status' && (typeof payload.state !== 'string' || !payload.state)) {
    refuse(ws, msg.id, 'invalid_message', 'payload.state must be a non-empty string');
    return;
  }
  seq += 1;
  const id = typeof msg.id === 'string' ? msg.id : `srv-${randomBytes(16).toString('hex')}`;
  // Encoded to bytes once too: given a string, ws would convert it again for every recipient.
  const relay = Buffer.from(
    JSON.stringify({
      type: msg.type,
      id,
      timestamp: typeof msg.timestamp === 'string' ? msg.timestamp : new Date().toISOString(),
      from: identity.name,
      seq,
      payload,
    }),
  );
  ws.send(JSON.stringify({ type: 'ack', id, seq }));
  for (const dashboard of dashboards) dashboard.send(relay, { binary: false });
}

http.listen(Number(port), '127.0.0.1', () => {
  console.log(`node ws baseline listening on 127.0.0.1:${port}`);
});
