/*
 * What the widget remembers between page views (the conversation and its token, feedback given,
 * a handoff, a rating), in localStorage or, where that is unavailable, in memory.
 */

import { STORAGE_KEY } from "./config.js";

// localStorage can be missing or throw (private modes, blocked third-party storage): fall
// back to memory, so that the chat still works for this page view.
const memoryStorage = new Map();

export const storage = {
  get(key) {
    let raw = null;
    try {
      raw = window.localStorage.getItem(key);
    } catch (error) {
      raw = memoryStorage.has(key) ? memoryStorage.get(key) : null;
    }
    if (raw == null) return null;
    try {
      return JSON.parse(raw);
    } catch (error) {
      return null;
    }
  },
  set(key, value) {
    const raw = JSON.stringify(value);
    try {
      window.localStorage.setItem(key, raw);
    } catch (error) {
      memoryStorage.set(key, raw);
    }
  },
  remove(key) {
    try {
      window.localStorage.removeItem(key);
    } catch (error) {
      /* storage unavailable */
    }
    memoryStorage.delete(key);
  },
};

export function conversationKey(kind, conversationId) {
  return `cs-widget:${kind}:${conversationId}`;
}

export function loadStoredConversation() {
  const value = storage.get(STORAGE_KEY);
  if (!value || typeof value !== "object") return null;
  if (value.id == null || typeof value.token !== "string" || typeof value.ws_path !== "string") return null;
  // The verified customer it was opened for (identity.js); null for an anonymous one.
  const customerId = typeof value.customer_id === "string" ? value.customer_id : null;
  return { id: value.id, token: value.token, ws_path: value.ws_path, customer_id: customerId };
}

export function forgetConversation(conversation) {
  storage.remove(STORAGE_KEY);
  if (conversation) {
    storage.remove(conversationKey("feedback", conversation.id));
    storage.remove(conversationKey("handoff", conversation.id));
    storage.remove(conversationKey("csat", conversation.id));
  }
}
