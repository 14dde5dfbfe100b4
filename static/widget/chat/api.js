/*
 * The widget REST API: creating the conversation, quick entries, and a rating for a conversation
 * other than the one on the socket.
 */

import { renderQuickEntries } from "./composer.js";
import { STORAGE_KEY, config } from "./config.js";
import { renderHandoffStatus } from "./handoff.js";
import { customerSettled, identity } from "./identity.js";
import { connect } from "./socket.js";
import { loadConversationState, state } from "./state.js";
import { storage } from "./storage.js";
import { updateHeader } from "./ui.js";

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

export async function readError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  return new ApiError(response.status, body && body.code, body && body.detail);
}

export function ensureConversation() {
  if (state.conversation) return Promise.resolve(state.conversation);
  if (state.creating) return state.creating;
  state.creating = (async () => {
    try {
      // The host page's customer (verified by the server, which refuses a wrong hash with 403
      // invalid_identity), once the page has had its say.
      await customerSettled();
      const customer = identity.customer;
      const request = { locale: config.locale, metadata: state.metadata || {} };
      if (customer) request.customer = { id: customer.id, hash: customer.hash };
      const response = await fetch(`${config.apiBase}/conversations`, {
        method: "POST",
        credentials: "omit",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(request),
      });
      if (response.status !== 201 && response.status !== 200) throw await readError(response);
      const body = await response.json();
      if (body.id == null || !body.token || !body.ws_path) throw new ApiError(response.status, "bad_response", "");
      // Whose it is, so that a page signed in as someone else does not open it (identity.js).
      const customerId = customer && body.customer_verified === true ? customer.id : null;
      const conversation = { id: body.id, token: body.token, ws_path: body.ws_path, customer_id: customerId };
      state.conversation = conversation;
      storage.set(STORAGE_KEY, conversation);
      loadConversationState();
      updateHeader();
      renderHandoffStatus();
      connect();
      return conversation;
    } finally {
      state.creating = null;
    }
  })();
  return state.creating;
}

export async function loadQuickEntries() {
  try {
    const response = await fetch(`${config.apiBase}/faq?locale=${encodeURIComponent(config.locale)}`, {
      credentials: "omit", headers: { Accept: "application/json" },
    });
    if (!response.ok) return;
    const body = await response.json();
    const entries = Array.isArray(body) ? body : body && Array.isArray(body.entries) ? body.entries : [];
    state.faq = entries.filter((entry) => entry && typeof entry.question === "string" && entry.question.trim());
    renderQuickEntries();
  } catch (error) {
    /* quick entries are optional */
  }
}

// A rating for a conversation other than the one on the socket (the previous one, after "New
// conversation"), with that conversation's own token.
export async function postCsat(conversation, { score, comment }) {
  const response = await fetch(`${config.apiBase}/conversations/${encodeURIComponent(conversation.id)}/csat`, {
    method: "POST",
    credentials: "omit",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json",
      Authorization: `Bearer ${conversation.token}`,
    },
    body: JSON.stringify({ score, comment }),
  });
  if (!response.ok) throw await readError(response);
  return response.json();
}
