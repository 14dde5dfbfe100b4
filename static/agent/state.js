/*
 * The console's state, in one object every module reads; only the module that owns a part writes
 * it (queue.js the queues, conversation.js the open conversation, composer.js the draft).
 */

export const state = {
  config: null,
  me: null,
  supervisor: false,
  tab: "waiting",
  queues: { waiting: [], mine: [], all: [] },
  counts: { waiting: 0, mine: 0, all: 0 },
  queueLoaded: false,
  // The conversation on screen: its id, the detail (conversation, ticket, tickets) and its messages.
  selected: null,
  detail: null,
  messages: new Map(),
  loading: false,
  loadError: null,
  // Conversations this console asked the socket to `open` (re-opened after a reconnect).
  opened: new Set(),
  customerTypingUntil: 0,
  colleagueTyping: null,
  accepting: null,
  onlineAgents: null,
  composer: { text: "", mode: "reply", sending: false, error: null },
  assist: null,
  canned: null,
  cannedError: null,
  // The last message id the agent has seen per conversation (for the unread count in the title).
  seen: {},
};

const SEEN_KEY = () => `agent-console.seen.${state.me ? state.me.id : "anonymous"}`;

export function loadSeen() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(SEEN_KEY()) || "{}");
    state.seen = saved && typeof saved === "object" ? saved : {};
  } catch (error) {
    state.seen = {};
  }
}

export function saveSeen() {
  try {
    window.localStorage.setItem(SEEN_KEY(), JSON.stringify(state.seen));
  } catch (error) {
    /* private mode: the count starts again on reload */
  }
}

export function isMine(ticket) {
  return Boolean(ticket && ticket.assignee && state.me && ticket.assignee.id === state.me.id);
}

// Whether this agent may answer the customer in the open conversation (as the API decides).
export function mayReply() {
  const ticket = state.detail && state.detail.ticket;
  if (!ticket || ticket.status === "resolved") return false;
  return isMine(ticket) || state.supervisor;
}
