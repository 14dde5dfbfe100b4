/*
 * The console's REST calls to /api/agent/: the session cookie, the CSRF token on every write, and
 * every refusal as an ApiError with the API's {code, detail}.
 */

import { t } from "./strings.js";

const settings = { base: "/api/agent", csrfToken: null };

export class ApiError extends Error {
  constructor(status, code, detail, body) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
  }
}

export function configureApi({ base, csrfToken }) {
  if (base) settings.base = base;
  if (csrfToken) settings.csrfToken = csrfToken;
}

function csrfCookie() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : null;
}

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // The cookie is the token Django checks against; the page's copy is for a browser that hides it.
  if (method !== "GET") headers["X-CSRFToken"] = csrfCookie() || settings.csrfToken || "";
  let response;
  try {
    response = await fetch(settings.base + path, {
      method,
      credentials: "same-origin",
      headers,
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (error) {
    throw new ApiError(0, "network", t("error.network"), null);
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
  }
  if (!response.ok) {
    const code = (data && data.code) || `http_${response.status}`;
    const detail = (data && data.detail) || t("error.unknown");
    throw new ApiError(response.status, code, detail, data);
  }
  return data;
}

export const api = {
  signIn: (username, password) => request("POST", "/session", { username, password }),
  signOut: () => request("DELETE", "/session"),
  queue: (queue) => request("GET", `/conversations?queue=${encodeURIComponent(queue)}`),
  conversation: (id) => request("GET", `/conversations/${encodeURIComponent(id)}`),
  claim: (id) => request("POST", `/conversations/${encodeURIComponent(id)}/claim`, {}),
  post: (id, text, internal) =>
    request("POST", `/conversations/${encodeURIComponent(id)}/messages`, { text, internal }),
  resolve: (id) => request("POST", `/conversations/${encodeURIComponent(id)}/resolve`, {}),
  handBack: (id) => request("POST", `/conversations/${encodeURIComponent(id)}/handback`, {}),
  cannedReplies: () => request("GET", "/canned-replies"),
};

// A signed-out session (expired, or signed out in another tab): the page shows the sign-in form.
export function reloadIfSignedOut(error) {
  if (error instanceof ApiError && error.status === 403 && error.code === "not_authenticated") {
    window.location.reload();
    return true;
  }
  return false;
}
