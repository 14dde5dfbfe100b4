/*
 * The chat's state: the conversation, its entries and what is waiting to be sent (state), and
 * the websocket's (connection). The other modules read and change these two objects.
 */

import { conversationKey, loadStoredConversation, storage } from "./storage.js";

export const state = {
  conversation: loadStoredConversation(),
  creating: null,
  metadata: {},
  entries: [],
  byId: new Map(),
  byClientId: new Map(),
  replies: new Map(),
  awaiting: null,
  outbox: new Map(),
  pendingFrames: [],
  drafts: [],
  faq: [],
  handoff: null,
  feedback: {},
  csatDone: false,
  completedRepliesThisVisit: 0,
  csatPromptShown: false,
  previousConversation: null,
  invalidTokenResets: [],
  unread: 0,
};

export const connection = {
  socket: null,
  ready: false,
  everReady: false,
  attempt: 0,
  reconnectTimer: null,
  handshakeTimer: null,
  bannerTimer: null,
};

export function loadConversationState() {
  const conversation = state.conversation;
  state.feedback = (conversation && storage.get(conversationKey("feedback", conversation.id))) || {};
  state.handoff = (conversation && storage.get(conversationKey("handoff", conversation.id))) || null;
  state.csatDone = Boolean(conversation && storage.get(conversationKey("csat", conversation.id)));
}
