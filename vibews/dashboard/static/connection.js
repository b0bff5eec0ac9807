// The WebSocket to the hub and its upkeep: reconnecting with exponential backoff and jitter, and
// telling "the server refused us" from "the server is unreachable". A browser never sees the HTTP
// status of a refused handshake (401 for a bad token): it only sees a socket that closed before it
// opened. So after such a failure the page asks healthz (same site, no token needed): if the server
// answers, the handshake itself was refused.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const REFUSALS_BEFORE_GIVING_UP = 2; // the server may have come up between the socket and the probe

export function socketUrl() {
  // Relative to the page, so a hub mounted under a prefix (/vibews/) works unchanged.
  const url = new URL("ws", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  url.search = "";
  return url.href;
}

async function serverAnswers() {
  try {
    const response = await fetch(new URL("healthz", document.baseURI), { cache: "no-store" });
    return response.status > 0; // 200, or 503 naming a store problem: either way, it is up
  } catch {
    return false;
  }
}

export class Connection {
  // handlers: onOpen(), onMessage(object), onState({state, ...details})
  constructor(token, handlers) {
    this.token = token;
    this.handlers = handlers;
    this.socket = null;
    this.attempt = 0;
    this.refusals = 0;
    this.timer = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "dashboard closed");
    }
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  // The connection works: the next failure starts the backoff from the beginning again.
  confirmed() {
    this.attempt = 0;
    this.refusals = 0;
  }

  // Drop this connection and open a new one at once (for a fresh snapshot).
  restart() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "reconnecting for a fresh snapshot");
    }
    if (!this.stopped) {
      this.open();
    }
  }

  reconnectNow() {
    if (this.stopped || (this.socket && this.socket.readyState <= WebSocket.OPEN)) {
      return;
    }
    clearTimeout(this.timer);
    this.timer = null;
    this.open();
  }

  open() {
    this.handlers.onState({ state: "connecting", attempt: this.attempt });
    let socket;
    try {
      socket = new WebSocket(socketUrl(), ["vibews.v1", "vibews.token." + this.token]);
    } catch (error) {
      this.stopped = true;
      this.handlers.onState({ state: "rejected", reason: "malformed", detail: String(error) });
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.handlers.onOpen();
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) {
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // the server sends JSON only; nothing sensible to do with anything else
      }
      this.handlers.onMessage(message);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) {
        return; // closed on purpose (restart, stop)
      }
      this.socket = null;
      if (this.stopped) {
        return;
      }
      if (opened) {
        this.closedAfterOpen(event);
      } else {
        this.failedBeforeOpen();
      }
    };
  }

  closedAfterOpen(event) {
    if (event.code === 1008 && event.reason === "token revoked") {
      this.stopped = true;
      this.handlers.onState({ state: "rejected", reason: "revoked" });
      return;
    }
    this.retryLater({ code: event.code, reason: event.reason });
  }

  async failedBeforeOpen() {
    const up = await serverAnswers();
    if (this.stopped) {
      return;
    }
    if (!up) {
      this.refusals = 0;
      this.retryLater({ unreachable: true });
      return;
    }
    this.refusals += 1;
    if (this.refusals >= REFUSALS_BEFORE_GIVING_UP) {
      this.stopped = true;
      this.handlers.onState({ state: "rejected", reason: "refused" });
      return;
    }
    this.retryLater({ refused: true }, FIRST_DELAY_MS);
  }

  retryLater(details, fixedDelay) {
    // Exponential backoff with jitter (half to all of the step), so that a hundred dashboards
    // do not all come back in the same instant after a restart.
    const step = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.attempt);
    const delay = fixedDelay ?? Math.round(step / 2 + Math.random() * (step / 2));
    this.attempt += 1;
    this.handlers.onState({ state: "waiting", delay, until: Date.now() + delay, ...details });
    this.timer = setTimeout(() => {
      this.timer = null;
      this.open();
    }, delay);
  }
}
