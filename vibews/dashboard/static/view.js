// Everything on the page except the open-question cards: agents, tasks, closed questions with their
// receipts, the activity feed, the connection state and who is signed in.

import { el, textOf } from "./dom.js";
import { ago, clock, isoOf, parseTime } from "./time.js";

const FEED_LIMIT = 60;
const CLOSED_LIMIT = 30;

function timeNode(ms, text) {
  return el("time", { datetime: isoOf(ms), text });
}

function statusText(status) {
  if (!status) {
    return "no status yet";
  }
  const detail = typeof status.detail === "string" ? status.detail : "";
  return detail ? `${textOf(status.state)}: ${detail}` : textOf(status.state);
}

export function renderAgents(list, empty, agents, now) {
  const names = [...agents.keys()].sort((a, b) =>
    Number(agents.get(b).online) - Number(agents.get(a).online) || a.localeCompare(b));
  list.replaceChildren(...names.map((name) => {
    const agent = agents.get(name);
    const seen = parseTime(agent.lastSeen);
    let seenText = "never connected";
    if (Number.isFinite(seen)) {
      seenText = agent.online ? `online since ${clock(seen)}` : `last seen ${ago(seen, now)}`;
    }
    return el("li", { className: "agent", "data-online": String(agent.online), "data-agent": name },
      el("span", { className: "agent-name", text: name }),
      el("span", { className: `presence ${agent.online ? "online" : "offline"}`,
        text: agent.online ? "online" : "offline" }),
      el("span", { className: "agent-status", text: statusText(agent.status) }),
      el("span", { className: "agent-seen" }, timeNode(seen, seenText)),
    );
  }));
  empty.hidden = names.length > 0;
}

export function renderTasks(list, empty, tasks, now) {
  const updates = [...tasks.values()].sort((a, b) => b.seq - a.seq);
  list.replaceChildren(...updates.map((update) => {
    const payload = update.payload ?? {};
    const progress = typeof payload.progress === "number" ? payload.progress : null;
    const labelId = `task-${update.seq}`;
    const when = parseTime(update.timestamp);
    return el("li", { className: "task", "data-task": textOf(payload.task_id) },
      el("span", { id: labelId, className: "task-id", text: textOf(payload.task_id) }),
      el("span", { className: "task-status", text: textOf(payload.status) }),
      progress === null
        ? el("span", { className: "task-progress none", text: "no progress reported" })
        : el("span", { className: "task-progress" },
          el("progress", { max: "1", value: String(progress), "aria-labelledby": labelId }),
          ` ${Math.round(progress * 100)} %`),
      el("span", { className: "task-meta" }, `${textOf(update.from)} · `, timeNode(when, ago(when, now))),
    );
  }));
  empty.hidden = updates.length > 0;
}

function answerText(answer) {
  if (!answer) {
    return "";
  }
  const payload = answer.payload ?? {};
  const action = payload.action ?? "accept";
  let content = "";
  if (payload.value !== undefined) {
    content = Object.entries(payload.value ?? {})
      .map(([name, value]) => `${name}: ${textOf(value)}`).join(", ");
  } else if (typeof payload.text === "string") {
    content = payload.text;
  }
  if (action !== "accept") {
    const done = action === "decline" ? "declined" : action === "cancel" ? "cancelled" : action;
    return content ? `${done}: ${content}` : done;
  }
  return content;
}

function receiptNode(question) {
  if (question.state === "expired") {
    return el("span", { className: "receipt expired", text: "expired unanswered" });
  }
  if (question.state === "withdrawn") {
    return el("span", { className: "receipt withdrawn", text: "withdrawn by the agent" });
  }
  if (question.delivered) {
    const at = parseTime(question.deliveredAt);
    return el("span", { className: "receipt delivered", "data-delivered": "true" },
      "✓ delivered", Number.isFinite(at) ? " at " : "", Number.isFinite(at) ? timeNode(at, clock(at)) : "");
  }
  return el("span", { className: "receipt pending", "data-delivered": "false",
    text: "not yet delivered" });
}

export function renderClosed(list, empty, questions) {
  list.replaceChildren(...questions.slice(0, CLOSED_LIMIT).map((question) => {
    const message = question.message;
    const answer = question.answer;
    return el("li", { className: "closed", "data-question-id": message.id, "data-state": question.state },
      el("p", { className: "closed-text" },
        el("span", { className: "from", text: textOf(message.from) }), ": ",
        el("span", { text: textOf(message.payload?.text) })),
      el("p", { className: "closed-answer" },
        answer ? el("span", { className: "answer-by", text: `${textOf(answer.from)} answered ` }) : null,
        answer ? el("q", { text: answerText(answer) }) : null,
        !answer && question.state === "answered" ? "answered (before this page opened) " : null,
        " ",
        receiptNode(question)),
    );
  }));
  empty.hidden = questions.length > 0;
}

export class Feed {
  constructor(list) {
    this.list = list;
  }

  add(text, ms) {
    this.list.prepend(el("li", {}, timeNode(ms, clock(ms)), " ", el("span", { text })));
    while (this.list.children.length > FEED_LIMIT) {
      this.list.lastElementChild.remove();
    }
  }

  clear() {
    this.list.replaceChildren();
  }
}

// One line for the feed, or null for messages not worth a line.
export function describe(message, question) {
  const p = message.payload ?? {};
  const about = question ? `“${textOf(question.message.payload?.text)}”` : textOf(p.question_id);
  switch (message.type) {
    case "agent_status":
      return `${message.from} is ${statusText(p)}`;
    case "task_update":
      return `${message.from}: task ${textOf(p.task_id)} ${textOf(p.status)}` +
        (typeof p.progress === "number" ? ` (${Math.round(p.progress * 100)} %)` : "");
    case "question":
      return `${message.from} asks: ${textOf(p.text)}`;
    case "answer":
      return `${message.from} answered ${about}: ${answerText(message)}`;
    case "question_closed":
      return p.reason === "answered" ? null : `${about} ${p.reason}`;
    case "claimed":
      return p.by ? `${p.by} is answering ${about}` : `nobody is answering ${about} any more`;
    case "receipt":
      return `answer to ${about} delivered`;
    case "presence":
      return `${textOf(p.agent)} is ${p.online ? "online" : "offline"}`;
    default:
      return null;
  }
}

const STATE_TEXT = {
  idle: "Not connected.",
  connecting: "Connecting…",
  "catching-up": "Reconnected; catching up…",
  live: "Live.",
};

export function connectionText(details) {
  if (details.state === "waiting") {
    const seconds = Math.max(1, Math.round((details.until - Date.now()) / 1000));
    const why = details.unreachable
      ? "Server unreachable"
      : details.refused ? "Connection refused" : "Connection lost";
    return `${why}; reconnecting in ${seconds} s…`;
  }
  if (details.state === "rejected") {
    return "Not connected: token rejected.";
  }
  return STATE_TEXT[details.state] ?? details.state;
}
