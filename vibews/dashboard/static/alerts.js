// Getting a person's attention for a new question: a browser notification (only once they allowed
// it, by pressing the button: browsers ask only in answer to a click) and a mark in the tab title,
// which stays until they come back to the tab, or click or type on the page.

const BASE_TITLE = "vibews dashboard";

export class Alerts {
  constructor(button, onShow) {
    this.button = button;
    this.onShow = onShow;
    this.unseen = 0;
    this.open = 0;
    const supported = "Notification" in window && window.isSecureContext;
    this.supported = supported;
    if (supported) {
      button.addEventListener("click", () => this.ask());
    }
    this.refreshButton();
    const seen = () => {
      if (document.visibilityState === "visible" && this.unseen > 0) {
        this.unseen = 0;
        this.refreshTitle();
      }
    };
    document.addEventListener("visibilitychange", seen);
    for (const type of ["pointerdown", "keydown"]) {
      window.addEventListener(type, seen, true);
    }
  }

  refreshButton() {
    this.button.hidden = !this.supported || Notification.permission !== "default";
  }

  async ask() {
    try {
      await Notification.requestPermission();
    } finally {
      this.refreshButton();
    }
  }

  newQuestion(message) {
    this.unseen += 1;
    this.refreshTitle();
    if (this.supported && Notification.permission === "granted") {
      const text = typeof message.payload?.text === "string" ? message.payload.text : "";
      try {
        const note = new Notification(`Question from ${message.from}`, {
          body: text.slice(0, 200),
          tag: `vibews-${message.id}`,
        });
        note.onclick = () => {
          window.focus();
          this.onShow(message.id);
          note.close();
        };
      } catch {
        // some platforms only allow notifications from a service worker: the title still shows it
      }
    }
  }

  setOpen(count) {
    this.open = count;
    this.refreshTitle();
  }

  refreshTitle() {
    const mark = this.unseen > 0 ? "● " : "";
    const count = this.open > 0 ? `(${this.open}) ` : "";
    document.title = `${mark}${count}${BASE_TITLE}`;
  }
}
