// Keeping the model exactly in step with the hub (protocol-v1 sections 2, 5 and 6):
// - the first connection builds the model from welcome's snapshot; every stored message after it
//   is applied once, in seq order, and a gap means the picture can no longer be trusted;
// - a reconnect to the same history (same epoch) sends resume with the last seq applied, so
//   nothing that happened meanwhile is lost, and the activity feed and receipts carry on; live
//   messages that overtake the replay are skipped (the replay includes them);
// - resumed with complete: false, or another epoch, means: start again from a fresh snapshot;
// - answers and claims are sent with ids, and an answer not yet acked is sent again with the same
//   id after a reconnect (the server acks a retried id as a duplicate and stores it once).

import { Model } from "./model.js";

function randomId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(12)); // works outside secure contexts too
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Session {
  // listeners: changed(), applied(message, question, live), welcomed(welcome),
  //            replied(kind, questionId, reply), wrongRole(welcome), state(details)
  constructor(listeners) {
    this.listeners = listeners;
    this.model = new Model();
    this.connection = null;
    this.seq = null; // the last seq applied to the model
    this.epoch = null;
    this.name = null;
    this.resuming = false;
    this.outbox = new Map(); // id -> {message, kind, questionId}: sent, not yet acked or refused
    this.myClaims = new Set(); // seqs of the claimed frames this connection caused
    this.ready = false; // welcome seen (and the resume, if any, finished)
  }

  attach(connection) {
    this.connection = connection;
  }

  opened() {
    this.ready = false;
    this.resuming = false;
    this.myClaims.clear();
    this.dropUnsentClaims(); // a claim belonged to the connection that is gone
  }

  receive(message) {
    switch (message.type) {
      case "welcome":
        this.welcome(message);
        return;
      case "resumed":
        this.resumed(message.payload ?? {});
        return;
      case "ack":
        this.acked(message);
        return;
      case "error":
        this.refused(message);
        return;
      default:
        if (Number.isInteger(message.seq)) {
          this.stored(message);
        }
    }
  }

  welcome(message) {
    const payload = message.payload ?? {};
    if (payload.role !== "dashboard") {
      this.listeners.wrongRole(payload);
      return;
    }
    this.name = payload.name;
    this.listeners.welcomed(payload);
    if (this.seq !== null && this.epoch !== null && payload.epoch === this.epoch) {
      this.resuming = true;
      this.listeners.state({ state: "catching-up" });
      this.connection.send({ type: "resume", payload: { since: this.seq, epoch: this.epoch } });
      return;
    }
    this.model.loadSnapshot(payload.snapshot);
    this.seq = payload.seq;
    this.epoch = payload.epoch ?? null;
    this.live();
  }

  resumed(payload) {
    this.resuming = false;
    if (payload.complete !== true || payload.seq !== this.seq) {
      // Part of the history is gone (or from elsewhere): rebuild from a fresh welcome.
      this.forget();
      this.connection.restart();
      return;
    }
    this.live();
  }

  live() {
    this.ready = true;
    this.connection.confirmed();
    this.listeners.state({ state: "live" });
    this.listeners.changed();
    for (const entry of this.outbox.values()) {
      this.connection.send(entry.message);
    }
  }

  forget() {
    this.seq = null;
    this.epoch = null;
    this.model.clear();
  }

  stored(message) {
    if (this.seq === null || message.seq <= this.seq) {
      return; // before the snapshot, or replayed again: already applied
    }
    if (message.seq !== this.seq + 1) {
      if (this.resuming) {
        return; // a live message ahead of the replay; the replay brings it in order
      }
      this.forget(); // a gap: the picture is incomplete
      this.connection.restart();
      return;
    }
    this.seq = message.seq;
    const question = this.model.apply(message);
    if (message.type === "claimed" && question && this.myClaims.has(message.seq)) {
      question.claim.mine = true;
    }
    this.listeners.applied(message, question, this.ready);
    this.listeners.changed();
  }

  acked(message) {
    const entry = this.outbox.get(message.id);
    if (entry === undefined) {
      return;
    }
    this.outbox.delete(message.id);
    if (entry.kind === "claim") {
      this.myClaims.add(message.seq);
    }
    this.listeners.replied(entry.kind, entry.questionId, message);
  }

  refused(message) {
    const entry = this.outbox.get(message.id);
    if (entry === undefined) {
      return;
    }
    this.outbox.delete(message.id);
    this.listeners.replied(entry.kind, entry.questionId, message);
  }

  // Send an answer; payload has question_id and action, text or value.
  answer(payload) {
    const message = { type: "answer", id: randomId("answer-"), payload };
    this.outbox.set(message.id, { message, kind: "answer", questionId: payload.question_id });
    this.connection.send(message); // if the socket is down, it goes out after the reconnect
    return message.id;
  }

  // A claim is only useful now: it is not kept for a later connection.
  claim(questionId) {
    const message = { type: "claim", id: randomId("claim-"), payload: { question_id: questionId } };
    if (this.ready && this.connection.send(message)) {
      this.outbox.set(message.id, { message, kind: "claim", questionId, once: true });
      return true;
    }
    return false;
  }

  dropUnsentClaims() {
    for (const [id, entry] of this.outbox) {
      if (entry.once) {
        this.outbox.delete(id);
      }
    }
  }
}
