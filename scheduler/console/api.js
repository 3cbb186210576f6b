// The JSON API with the token the user typed. The token lives in sessionStorage: gone when the tab
// closes, never in a URL (no leak through history or a Referer) and never in a cookie.

const TOKEN_KEY = "scheduler.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function keepToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// fetch a path of this node; the answer's JSON, null for 204, or an ApiError with the API's message.
export async function api(path, {method = "GET", secret = token()} = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: secret ? {Authorization: `Bearer ${secret}`} : {},
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, `The node does not answer (${error.message})`);
  }
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : response.statusText;
    throw new ApiError(response.status, `${response.status} ${body && body.error ? body.error : ""}: ${message}`);
  }
  return body;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export function taskPath(itemId, tail = "") {
  return `/cxs/tasks/${encodeURIComponent(itemId)}${tail}`;
}
