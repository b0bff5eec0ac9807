// The dashboard page: wires the token, the connection, the session (the model kept in step with
// the hub) and the view together.

import { Alerts } from "./alerts.js";
import { Connection } from "./connection.js";
import { QuestionList } from "./questions.js";
import { Session } from "./session.js";
import { forgetToken, isWellFormed, rememberToken, takeToken } from "./token.js";
import { Feed, connectionText, describe, renderAgents, renderClosed, renderTasks } from "./view.js";
import { parseTime } from "./time.js";

const $ = (id) => document.getElementById(id);

const page = {
  connection: $("connection"),
  reconnect: $("reconnect-button"),
  tokenPanel: $("token-panel"),
  tokenMessage: $("token-message"),
  tokenForm: $("token-form"),
  tokenInput: $("token-input"),
  main: $("main"),
  identity: $("identity"),
  signOut: $("sign-out"),
};

const feed = new Feed($("feed"));
let connection = null;
let renderQueued = false;

const session = new Session({
  changed: queueRender,
  applied(message, question, live) {
    const line = describe(message, question);
    if (line) {
      const at = parseTime(message.timestamp);
      feed.add(line, Number.isFinite(at) ? at : Date.now());
    }
    if (message.type === "question" && live) {
      alerts.newQuestion(message);
    }
  },
  welcomed(welcome) {
    page.main.hidden = false;
    page.identity.textContent = `Signed in as ${welcome.name} · ${welcome.server ?? "vibews"}`;
    page.signOut.hidden = false;
  },
  replied(kind, questionId, reply) {
    if (kind === "answer") {
      questions.replied(questionId, reply);
    }
  },
  wrongRole(welcome) {
    connection.stop();
    showTokenPanel(`“${welcome.name}” is an ${welcome.role} token; the dashboard needs a dashboard token.`);
    setState({ state: "rejected" });
  },
  state: setState,
});

const questions = new QuestionList($("questions"), $("no-questions"), $("open-count"),
  $("questions-heading"), {
    answer: (payload) => session.answer(payload),
    claim: (questionId) => session.claim(questionId),
  });

const alerts = new Alerts($("notify-button"), (questionId) => {
  document.querySelector(`article[data-question-id="${CSS.escape(questionId)}"]`)?.focus();
});

function queueRender() {
  if (!renderQueued) {
    renderQueued = true;
    setTimeout(render, 0); // one render for a burst of messages (a long replay, say)
  }
}

function render() {
  renderQueued = false;
  const model = session.model;
  const now = Date.now();
  const open = model.openQuestions();
  questions.render(open);
  alerts.setOpen(open.length);
  renderAgents($("agents"), $("no-agents"), model.agents, now);
  renderTasks($("tasks"), $("no-tasks"), model.tasks, now);
  renderClosed($("answered"), $("no-answered"), model.closedQuestions(30));
}

function setState(details) {
  page.connection.dataset.state = details.state;
  page.connection.textContent = connectionText(details);
  page.reconnect.hidden = details.state !== "waiting";
  if (details.state === "rejected" && details.reason) {
    const text = {
      refused: "The server is reachable but refused the connection: the token is wrong or has " +
        "been revoked (or this page's address is not an allowed origin).",
      revoked: "This token has been revoked.",
      malformed: "That is not a well-formed token.",
    }[details.reason];
    showTokenPanel(text ?? "The connection was refused.");
  }
}

function showTokenPanel(message) {
  page.main.hidden = true; // what it showed may be stale, or there is nothing to show yet
  page.tokenMessage.textContent = message;
  page.tokenPanel.hidden = false;
  page.tokenInput.value = "";
  page.tokenInput.focus();
}

function connect(token) {
  if (connection) {
    connection.stop();
  }
  page.tokenPanel.hidden = true;
  session.forget();
  feed.clear();
  connection = new Connection(token, {
    onOpen: () => session.opened(),
    onMessage: (message) => session.receive(message),
    onState: setState,
  });
  session.attach(connection);
  connection.start();
}

page.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = page.tokenInput.value.trim();
  if (!isWellFormed(token)) {
    page.tokenMessage.textContent = "A token is at least 16 characters of A–Z, a–z, 0–9, _ and -.";
    page.tokenInput.focus();
    return;
  }
  rememberToken(token);
  connect(token);
});

page.signOut.addEventListener("click", () => {
  if (connection) {
    connection.stop();
  }
  forgetToken();
  setState({ state: "idle" });
  page.signOut.hidden = true;
  page.identity.textContent = "";
  showTokenPanel("Enter a dashboard token.");
});

page.reconnect.addEventListener("click", () => connection?.reconnectNow());
window.addEventListener("online", () => connection?.reconnectNow());

setInterval(() => {
  const now = Date.now();
  questions.tick(now);
  renderAgents($("agents"), $("no-agents"), session.model.agents, now);
  renderTasks($("tasks"), $("no-tasks"), session.model.tasks, now);
}, 1000);

const token = takeToken();
if (token === null) {
  setState({ state: "idle" });
  showTokenPanel("Open the address the server printed (it ends in #token=…), or enter a dashboard token.");
} else if (!isWellFormed(token)) {
  forgetToken();
  setState({ state: "idle" });
  showTokenPanel("The token in the address is not well formed: a token is at least 16 characters of A–Z, a–z, 0–9, _ and -.");
} else {
  connect(token);
}
