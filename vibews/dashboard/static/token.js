// Where the dashboard token lives: it arrives in the address's fragment (#token=…, as the server
// prints it at first start), is moved to sessionStorage (this tab only, gone when the tab closes)
// and removed from the address bar, so it is neither bookmarked, nor shared with a screenshot of
// the address, nor sent to the server in any URL (fragments never are; the WebSocket carries it in
// a subprotocol).

const KEY = "vibews.token:" + location.pathname; // two hubs mounted on one origin keep apart
const SECRET = /^[A-Za-z0-9_-]{16,}$/;
let fallback = null; // when sessionStorage is unavailable (some privacy modes)

export function isWellFormed(token) {
  return typeof token === "string" && SECRET.test(token);
}

function store(token) {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    fallback = token;
  }
}

export function forgetToken() {
  fallback = null;
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing stored there
  }
}

export function rememberToken(token) {
  store(token);
}

// Take a token from the fragment if there is one (removing it from the address bar at once), and
// return the token to use, or null.
export function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    const token = fragment.get("token");
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(history.state, "",
      location.pathname + location.search + (rest ? "#" + rest : ""));
    if (token) {
      store(token);
    }
  }
  try {
    return sessionStorage.getItem(KEY) ?? fallback;
  } catch {
    return fallback;
  }
}
