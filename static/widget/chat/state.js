/*
 * The chat's state: the conversation, its entries, what is waiting to be sent, drafts, feedback
 * and the handoff. The websocket's own state is private to socket.js.
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

export function loadConversationState() {
  const conversation = state.conversation;
  state.feedback = (conversation && storage.get(conversationKey("feedback", conversation.id))) || {};
  state.handoff = (conversation && storage.get(conversationKey("handoff", conversation.id))) || null;
  state.csatDone = Boolean(conversation && storage.get(conversationKey("csat", conversation.id)));
}
