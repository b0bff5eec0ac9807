// The open questions: one card per question, kept across updates (so what a person is typing, and
// where the keyboard focus is, survive every message that arrives), ordered by urgency and age.

import { deadlineOf } from "./model.js";
import { el, textOf, uniqueId } from "./dom.js";
import { schemaFields } from "./schema-form.js";
import { ago, clock, duration, parseTime } from "./time.js";

const CLAIM_RENEW_MS = 20000; // claim again when a person keeps typing this close to the end
const CLAIM_MIN_GAP_MS = 5000;

class QuestionCard {
  constructor(question, actions) {
    this.id = question.message.id;
    this.actions = actions;
    this.lastClaimAt = 0;
    this.sending = false;
    const message = question.message;
    const payload = message.payload ?? {};
    const textId = uniqueId("question-text");
    this.urgency = ["high", "normal", "low"].includes(payload.urgency) ? payload.urgency : null;

    this.askedTime = el("time", { datetime: message.timestamp ?? "" });
    this.countdown = el("span", { className: "countdown" });
    this.claimLine = el("p", { className: "claim" });
    this.problem = el("p", { className: "problem", role: "alert" });
    this.progress = el("p", { className: "sending", "aria-live": "polite" });

    const head = el("p", { className: "question-meta" },
      this.urgency ? el("span", { className: `badge urgency-${this.urgency}`, text: this.urgency }) : null,
      el("span", { className: "from", text: textOf(message.from) }),
      " asked ",
      this.askedTime,
      this.countdown,
    );
    const text = el("p", { id: textId, className: "question-text", text: textOf(payload.text) });

    this.fieldset = el("fieldset", {}, el("legend", { className: "visually-hidden", text: "Answer" }));
    this.form = el("form", { className: "answer-form", "aria-labelledby": textId });
    this.form.append(this.fieldset);

    const options = Array.isArray(payload.options) ? payload.options : [];
    const hasSchema = payload.schema && typeof payload.schema === "object";
    if (options.length > 0 && !hasSchema) {
      const group = el("div", { className: "options", role: "group", "aria-label": "Options" });
      for (const option of options) {
        group.append(el("button", {
          type: "button",
          className: "option",
          text: textOf(option),
          onclick: () => this.send({ action: "accept", text: textOf(option) }),
        }));
      }
      this.fieldset.append(group);
    }
    if (hasSchema) {
      const { fields, read } = schemaFields(payload.schema);
      this.fieldset.append(...fields);
      this.readValue = read;
    } else {
      const boxId = uniqueId("answer-text");
      this.textBox = el("textarea", {
        id: boxId,
        rows: 2,
        required: options.length === 0,
        "aria-describedby": boxId + "-hint",
      });
      this.textBox.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          this.form.requestSubmit();
        }
      });
      this.fieldset.append(el("div", { className: "field" },
        el("label", { for: boxId, text: options.length ? "Or write an answer" : "Your answer" }),
        this.textBox,
        el("p", { id: boxId + "-hint", className: "hint", text: "Ctrl+Enter sends." }),
      ));
    }
    this.fieldset.append(el("div", { className: "actions" },
      el("button", { type: "submit", className: "primary", text: hasSchema ? "Submit" : "Send answer" }),
      el("button", { type: "button", className: "decline", text: "Decline", onclick: () => this.decline() }),
    ));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.accept();
    });
    this.form.addEventListener("input", () => this.typing());

    this.node = el("article", {
      className: "question",
      tabindex: "-1",
      "aria-labelledby": textId,
      "data-question-id": this.id,
    }, head, text, this.claimLine, this.form, this.progress, this.problem);
    if (this.urgency) {
      this.node.dataset.urgency = this.urgency;
    }
    this.update(question);
  }

  accept() {
    if (this.readValue) {
      this.send({ action: "accept", value: this.readValue() });
    } else {
      this.send({ action: "accept", text: this.textBox.value });
    }
  }

  decline() {
    const reason = this.textBox ? this.textBox.value.trim() : "";
    this.send(reason ? { action: "decline", text: reason } : { action: "decline" });
  }

  send(fields) {
    if (this.sending) {
      return;
    }
    this.sending = true;
    const hadFocus = this.node.contains(document.activeElement);
    this.fieldset.disabled = true;
    if (hadFocus) {
      this.node.focus(); // a disabled control drops the focus; keep it on this question
    }
    this.problem.textContent = "";
    this.progress.textContent = "Sending…";
    this.actions.answer({ question_id: this.id, ...fields });
  }

  // The server's reply to this card's answer.
  replied(reply) {
    if (reply.type === "ack") {
      this.progress.textContent = "Answer stored.";
      return;
    }
    this.sending = false;
    this.fieldset.disabled = false;
    this.progress.textContent = "";
    if (document.activeElement === this.node) {
      this.fieldset.querySelector("button, input, select, textarea")?.focus();
    }
    this.problem.textContent = `Not accepted: ${textOf(reply.payload?.message)}`;
  }

  typing() {
    const now = Date.now();
    if (now - this.lastClaimAt < CLAIM_MIN_GAP_MS) {
      return;
    }
    const claim = this.claim;
    const until = parseTime(claim?.until);
    if (claim?.mine && until - now > CLAIM_RENEW_MS) {
      return;
    }
    if (this.actions.claim(this.id)) {
      this.lastClaimAt = now;
    }
  }

  update(question) {
    this.question = question;
    this.claim = question.claim;
    this.tick(Date.now());
  }

  tick(now) {
    const message = this.question.message;
    const asked = parseTime(message.timestamp);
    this.askedTime.textContent = ago(asked, now) || "";
    const deadline = deadlineOf(this.question);
    if (Number.isFinite(deadline.at)) {
      const left = deadline.at - now;
      this.countdown.textContent = left > 0
        ? ` · expires in ${deadline.exact ? "" : "about "}${duration(left)}`
        : " · deadline passed";
      this.countdown.dataset.soon = String(left < 60000);
    } else {
      this.countdown.textContent = "";
    }
    const claim = this.claim;
    if (claim && claim.by) {
      const until = parseTime(claim.until);
      const whose = claim.mine ? "You are answering this" : `${claim.by} is answering this`;
      this.claimLine.textContent = Number.isFinite(until) && until > now
        ? `${whose} (claimed until ${clock(until)})`
        : whose;
      this.claimLine.dataset.mine = String(Boolean(claim.mine));
      this.claimLine.hidden = false;
    } else {
      this.claimLine.textContent = "";
      this.claimLine.hidden = true;
    }
  }
}

export class QuestionList {
  constructor(container, empty, count, heading, actions) {
    this.container = container;
    this.empty = empty;
    this.count = count;
    this.heading = heading;
    this.actions = actions;
    this.cards = new Map();
  }

  render(openQuestions) {
    const wanted = new Set(openQuestions.map((q) => q.message.id));
    let focusLost = false;
    for (const [id, card] of this.cards) {
      if (!wanted.has(id)) {
        focusLost ||= card.node.contains(document.activeElement);
        card.node.remove();
        this.cards.delete(id);
      }
    }
    openQuestions.forEach((question, index) => {
      let card = this.cards.get(question.message.id);
      if (card === undefined) {
        card = new QuestionCard(question, this.actions);
        this.cards.set(card.id, card);
      } else {
        card.update(question);
      }
      // Move only what is out of place, so a card being typed into keeps its focus.
      const here = this.container.children[index];
      if (here !== card.node) {
        this.container.insertBefore(card.node, here ?? null);
      }
    });
    this.empty.hidden = openQuestions.length > 0;
    this.count.textContent = openQuestions.length ? `(${openQuestions.length})` : "";
    if (focusLost) {
      // The answered card went away with the focus: give it to the next question, or the heading.
      const next = this.container.firstElementChild;
      (next ?? this.heading).focus();
    }
  }

  replied(questionId, reply) {
    this.cards.get(questionId)?.replied(reply);
  }

  tick(now) {
    for (const card of this.cards.values()) {
      card.tick(now);
    }
  }
}
