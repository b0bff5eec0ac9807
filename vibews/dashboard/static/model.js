// The dashboard's picture of the hub: built from welcome's snapshot, then changed by every stored
// message, which the session applies strictly in seq order. No DOM here.

import { parseTime } from "./time.js";

const URGENCY_RANK = { high: 0, normal: 1, low: 2 };
// Closed questions kept (the snapshot may list every one within a long history; the page shows
// the most recent few, and a question that has left the page needs no more updates).
const CLOSED_KEPT = 100;

function rankOf(question) {
  return URGENCY_RANK[question.message.payload?.urgency] ?? URGENCY_RANK.normal;
}

// When an open question expires, in ms since the epoch, or NaN; and whether that is exact. A
// relayed question does not carry its deadline: with "timeout" it is counted from when the server
// received it, which the timestamp approximates (it is the agent's own clock when the agent sent one).
export function deadlineOf(question) {
  const payload = question.message.payload ?? {};
  if (typeof payload.expires_at === "string") {
    return { at: parseTime(payload.expires_at), exact: true };
  }
  if (typeof payload.timeout === "number" && payload.timeout > 0) {
    return { at: parseTime(question.message.timestamp) + payload.timeout * 1000, exact: false };
  }
  return { at: NaN, exact: true };
}

export class Model {
  constructor() {
    this.clear();
  }

  clear() {
    this.agents = new Map(); // name -> {online, status, lastSeen, statusAt}
    this.tasks = new Map(); // task_id -> the relayed task_update
    this.questions = new Map(); // id -> {message, state, claim, delivered, deliveredAt, answer, order}
  }

  agent(name) {
    let agent = this.agents.get(name);
    if (agent === undefined) {
      agent = { online: false, status: null, lastSeen: null, statusAt: null };
      this.agents.set(name, agent);
    }
    return agent;
  }

  loadSnapshot(snapshot) {
    this.clear();
    for (const [name, entry] of Object.entries(snapshot?.agents ?? {})) {
      this.agents.set(name, {
        online: entry.online === true,
        status: entry.status ?? null,
        lastSeen: entry.last_seen ?? null,
        statusAt: null,
      });
    }
    for (const [taskId, update] of Object.entries(snapshot?.tasks ?? {})) {
      this.tasks.set(taskId, update);
    }
    for (const entry of snapshot?.questions ?? []) {
      const { state, claim, delivered, ...message } = entry;
      this.questions.set(message.id, {
        message,
        state: state ?? "open",
        claim: claim ? { by: claim.by, until: claim.until, seq: null } : null,
        delivered: delivered === true,
        deliveredAt: null,
        answer: null,
        order: message.seq,
      });
    }
    this.pruneClosed();
  }

  pruneClosed() {
    const closed = [...this.questions.values()].filter((q) => q.state !== "open");
    if (closed.length > CLOSED_KEPT) {
      closed.sort((a, b) => b.order - a.order);
      for (const question of closed.slice(CLOSED_KEPT)) {
        this.questions.delete(question.message.id);
      }
    }
  }

  // Apply one stored message (it has a seq). Returns the question it concerns, if any.
  apply(message) {
    const payload = message.payload ?? {};
    switch (message.type) {
      case "agent_status": {
        const agent = this.agent(message.from);
        agent.status = payload;
        agent.statusAt = message.timestamp ?? null;
        return null;
      }
      case "task_update":
        this.tasks.set(payload.task_id, message);
        return null;
      case "presence": {
        const agent = this.agent(payload.agent);
        agent.online = payload.online === true;
        agent.lastSeen = payload.last_seen ?? agent.lastSeen;
        return null;
      }
      case "question": {
        const question = {
          message,
          state: "open",
          claim: null,
          delivered: false,
          deliveredAt: null,
          answer: null,
          order: message.seq,
        };
        this.questions.set(message.id, question);
        return question;
      }
      case "answer": {
        const question = this.questions.get(payload.question_id);
        if (question) {
          question.answer = message;
        }
        return question ?? null;
      }
      case "question_closed": {
        const question = this.questions.get(payload.question_id);
        if (question) {
          question.state = payload.reason ?? "answered";
          question.claim = null;
          question.order = message.seq;
          this.pruneClosed();
        }
        return question ?? null;
      }
      case "claimed": {
        const question = this.questions.get(payload.question_id);
        if (question) {
          question.claim = payload.by ? { by: payload.by, until: payload.until, seq: message.seq } : null;
        }
        return question ?? null;
      }
      case "receipt": {
        const question = this.questions.get(payload.question_id);
        if (question) {
          question.delivered = true;
          question.deliveredAt = payload.delivered_at ?? null;
        }
        return question ?? null;
      }
      default:
        return null; // a type this page does not know yet: counted by seq, otherwise ignored
    }
  }

  // Open questions first by urgency (high, normal, low), then oldest first.
  openQuestions() {
    return [...this.questions.values()]
      .filter((q) => q.state === "open")
      .sort((a, b) => rankOf(a) - rankOf(b) || a.message.seq - b.message.seq);
  }

  // Closed questions, the most recently closed first.
  closedQuestions(limit) {
    return [...this.questions.values()]
      .filter((q) => q.state !== "open")
      .sort((a, b) => b.order - a.order)
      .slice(0, limit);
  }
}
