// Times as people read them: "12 s ago", "in 4:05", "14:02:31".

export function parseTime(text) {
  if (typeof text !== "string") {
    return NaN;
  }
  // RFC 3339 allows a leap second (":60"), which Date does not: read it as the next second.
  const value = Date.parse(text.replace(/:60(?=[.,Z+-]|$)/i, ":59"));
  return Number.isNaN(value) ? NaN : value;
}

export function ago(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) {
    return "";
  }
  const seconds = Math.max(0, Math.round((now - ms) / 1000));
  if (seconds < 5) {
    return "just now";
  }
  if (seconds < 60) {
    return `${seconds} s ago`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ago`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return `${hours} h ago`;
  }
  return new Date(ms).toLocaleDateString();
}

export function duration(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) {
    return `${h} h ${String(m).padStart(2, "0")} min`;
  }
  return `${m}:${String(s).padStart(2, "0")}`;
}

export function clock(ms) {
  if (!Number.isFinite(ms)) {
    return "";
  }
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function isoOf(ms) {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : "";
}
