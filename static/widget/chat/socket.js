/*
 * The websocket and its frames: connecting with the token, reconnecting with backoff, sending or
 * queueing frames, and what each server frame does to the transcript.
 */

import { ensureConversation } from "./api.js";
import { bridge } from "./bridge.js";
import { renderDrafts, sendMessage } from "./composer.js";
import { RECENT_MESSAGE_MS, config } from "./config.js";
import { absoluteHttpUrl, frameListener } from "./dom.js";
import { maybeOfferCsat, onCsatSaved, onFeedbackSaved } from "./feedback.js";
import { hideAgentTyping, onAgentJoined, onAgentLeft, onAgentMessage, onAgentTyping, onConversationClosed, onConversationResolved, onHandoffStarted, renderHandoffStatus, restoreHandoff } from "./handoff.js";
import { assistantTitle, joinSentences, strings, t } from "./messages.js";
import { state } from "./state.js";
import { forgetConversation } from "./storage.js";
import { addLocalNotice, appendEntry, applyMessage, armReplyTimer, clearReplyTimer, createAwaitingReply, currentStreamingReply, dirtyEntries, entryFromMessage, findAnsweredCustomerEntry, findById, findReply, indexEntry, lastCustomerEntry, makeEntry, pauseReplyTimers, removeEntry, renderAll, renderEntry, replyErrorText, scheduleTextRender, scrollToBottom, updateQueuedNotes, updateStopButton } from "./transcript.js";
import { onToolFinished, onToolStarted, settledToolCalls } from "./tools.js";
import { announce, hideBanner, showBanner, showBannerSoon, showNotice, updateHeader } from "./ui.js";

// Only this module changes the websocket's state; the rest ask isConnected().
const connection = {
  socket: null,
  ready: false,
  everReady: false,
  attempt: 0,
  reconnectTimer: null,
  handshakeTimer: null,
};

// Whether the socket has said ready and frames can be sent now.
export function isConnected() {
  return connection.ready;
}

// A snapshot for the browser tests' read-only hook.
export function connectionState() {
  return { ready: connection.ready, everReady: connection.everReady, attempt: connection.attempt };
}

// Reconnect at once when the browser comes back online or the page is shown again.
export function watchConnectivity() {
  window.addEventListener("online", () => {
    if (!connection.ready && state.conversation) {
      connection.attempt = 0;
      reconnectNow();
    }
  });
  window.addEventListener("offline", () => {
    if (!connection.ready && state.conversation) showBanner("reconnecting");
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reconnectNow();
  });
}

export function websocketUrl(path) {
  if (/^wss?:\/\//i.test(path)) return path;
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path.startsWith("/") ? "" : "/"}${path}`;
}

export function connect() {
  if (!state.conversation) return;
  clearTimeout(connection.reconnectTimer);
  clearTimeout(connection.handshakeTimer);
  const previous = connection.socket;
  if (previous) {
    connection.socket = null;
    try {
      previous.close(1000);
    } catch (error) {
      /* already closed */
    }
  }
  connection.ready = false;
  if (!connection.everReady && connection.attempt === 0) {
    // Only say "Connecting…" when it takes long enough to notice.
    showBannerSoon("connecting", 1500, () => !connection.ready);
  }
  let socket;
  try {
    socket = new WebSocket(websocketUrl(state.conversation.ws_path));
  } catch (error) {
    scheduleReconnect();
    return;
  }
  connection.socket = socket;
  const conversation = state.conversation;
  // A socket that neither opens nor says ready within 15 s is given up and retried.
  connection.handshakeTimer = window.setTimeout(() => {
    if (connection.socket === socket && !connection.ready) socket.close(4000);
  }, 15000);
  socket.addEventListener("open", () => {
    if (connection.socket !== socket) return;
    socket.send(JSON.stringify({ type: "hello", token: conversation.token }));
  });
  // One bad frame must not take the widget down.
  socket.addEventListener("message", frameListener(() => connection.socket === socket, handleFrame, "cs-widget"));
  socket.addEventListener("close", (event) => {
    if (connection.socket !== socket) return;
    connection.socket = null;
    const wasReady = connection.ready;
    connection.ready = false;
    clearTimeout(connection.handshakeTimer);
    onSocketClosed(event.code, wasReady);
  });
}

export function onSocketClosed(code, wasReady) {
  pauseReplyTimers();
  updateStopButton();
  updateHeader();
  if (code === 4401) {
    handleInvalidToken();
    return;
  }
  if (wasReady || connection.attempt > 0 || connection.everReady) showBanner("reconnecting");
  else showBanner("connecting");
  scheduleReconnect();
}

export function scheduleReconnect() {
  clearTimeout(connection.reconnectTimer);
  if (!state.conversation) return;
  const base = Math.min(10000, 500 * 2 ** Math.min(connection.attempt, 10));
  const delay = base * (0.75 + Math.random() * 0.5);
  connection.attempt += 1;
  connection.reconnectTimer = window.setTimeout(connect, delay);
}

export function reconnectNow() {
  if (!state.conversation || connection.ready) return;
  if (connection.socket && connection.socket.readyState === WebSocket.CONNECTING) return;
  connect();
}

export function disconnect() {
  clearTimeout(connection.reconnectTimer);
  clearTimeout(connection.handshakeTimer);
  const socket = connection.socket;
  connection.socket = null;
  connection.ready = false;
  connection.everReady = false;
  connection.attempt = 0;
  if (socket) {
    try {
      socket.close(1000);
    } catch (error) {
      /* already closed */
    }
  }
  hideBanner();
}

export function sendFrame(frame) {
  const socket = connection.socket;
  if (!connection.ready || !socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

// Frames other than messages: sent now, or once the socket is ready again.
export function sendOrQueue(frame) {
  if (sendFrame(frame)) return;
  state.pendingFrames.push(frame);
  ensureConversation().catch(() => showNotice(t("createFailed")));
}

export function flushOutbox() {
  for (const item of state.outbox.values()) {
    if (!sendFrame(item.frame)) return;
    item.sentAt = Date.now();
  }
  while (state.pendingFrames.length && connection.ready) {
    const frame = state.pendingFrames.shift();
    if (!sendFrame(frame)) {
      state.pendingFrames.unshift(frame);
      return;
    }
  }
}

export function handleInvalidToken() {
  const now = Date.now();
  state.invalidTokenResets = state.invalidTokenResets.filter((time) => now - time < 60000);
  state.invalidTokenResets.push(now);
  const old = state.conversation;
  // Messages not yet accepted move to the new conversation; their images belonged to the
  // old one and cannot follow.
  const unsent = Array.from(state.outbox.values())
    .map((item) => item.entry)
    .filter((entry) => entry && entry.text);
  disconnect();
  forgetConversation(old);
  resetConversationState();
  renderAll();
  addLocalNotice(t("conversationExpired"));
  updateHeader();
  if (state.invalidTokenResets.length > 2) {
    showNotice(t("createFailed"));
    return;
  }
  for (const entry of unsent) sendMessage(entry.text, []);
}

export function resetConversationState() {
  for (const entry of state.entries) clearReplyTimer(entry);
  state.conversation = null;
  state.entries = [];
  state.byId = new Map();
  state.byClientId = new Map();
  state.replies = new Map();
  state.awaiting = null;
  state.outbox = new Map();
  state.pendingFrames = [];
  state.handoff = null;
  hideAgentTyping();
  renderHandoffStatus();
  state.feedback = {};
  state.csatDone = false;
  state.completedRepliesThisVisit = 0;
  state.csatPromptShown = false;
  state.csatPromptElement = null;
  for (const draft of state.drafts) {
    if (draft.xhr) draft.xhr.abort();
    if (draft.previewUrl) URL.revokeObjectURL(draft.previewUrl);
  }
  state.drafts = [];
  renderDrafts();
}

export function handleFrame(frame) {
  switch (frame.type) {
    case "ready": return onReady(frame);
    case "message.accepted": return onMessageAccepted(frame);
    case "reply.started": return onReplyStarted(frame);
    case "reply.delta": return onReplyDelta(frame);
    case "reply.done": return onReplyDone(frame);
    case "reply.error": return onReplyError(frame);
    case "tool.started": return onToolStarted(frame);
    case "tool.finished": return onToolFinished(frame);
    case "feedback.saved": return onFeedbackSaved(frame);
    case "csat.saved": return onCsatSaved(frame);
    case "handoff.started": return onHandoffStarted(frame);
    case "agent.joined": return onAgentJoined(frame);
    case "agent.message": return onAgentMessage(frame);
    case "agent.typing": return onAgentTyping(frame);
    case "agent.left": return onAgentLeft(frame);
    case "conversation.resolved": return onConversationResolved(frame);
    case "conversation.closed": return onConversationClosed(frame);
    case "error": return onErrorFrame(frame);
    default:
      // Frames added to the contract later that carry a message are shown as such.
      if (frame.message && typeof frame.message === "object" && frame.message.role) upsertMessage(frame.message);
      return undefined;
  }
}

export function onReady(frame) {
  connection.ready = true;
  connection.everReady = true;
  connection.attempt = 0;
  clearTimeout(connection.handshakeTimer);
  hideBanner();

  const history = Array.isArray(frame.messages) ? frame.messages : [];
  const pending = frame.pending_reply && frame.pending_reply.reply_id != null ? frame.pending_reply : null;
  const previousEntries = state.entries;
  for (const entry of previousEntries) clearReplyTimer(entry);
  const oldReplies = state.replies;
  const oldById = state.byId;

  state.entries = [];
  state.byId = new Map();
  state.byClientId = new Map();
  state.replies = new Map();
  state.awaiting = null;
  // Before anything is drawn: a conversation with a person shows no "thinking" for the assistant.
  restoreHandoff(frame.handoff);

  for (const message of history) {
    if (!message || typeof message !== "object") continue;
    const entry = entryFromMessage(message);
    // The tool lines this visit saw stay with their reply; one still running may have finished
    // unheard while the socket was away, so it is dropped rather than left spinning.
    entry.toolCalls = settledToolCalls(oldById.get(String(message.id)));
    state.entries.push(entry);
    indexEntry(entry);
  }

  if (pending) {
    let entry = findById(pending.reply_id);
    if (!entry) {
      const known = oldReplies.get(String(pending.reply_id));
      entry = makeEntry({ role: "assistant", status: "streaming", createdAt: known ? known.createdAt : new Date() });
      state.entries.push(entry);
    }
    entry.replyId = pending.reply_id;
    entry.status = "streaming";
    if (!entry.toolCalls.length) entry.toolCalls = settledToolCalls(oldReplies.get(String(pending.reply_id)));
    // The server's snapshot is authoritative: deltas after it continue from its seq.
    entry.text = typeof pending.text === "string" ? pending.text : "";
    entry.lastSeq = Number.isInteger(pending.seq) ? pending.seq : -1;
    entry.thinking = !entry.text;
    entry.answersTo = findAnsweredCustomerEntry(entry);
    indexEntry(entry);
  }

  // A saved reply still marked streaming that the server no longer works on was cut short.
  const now = Date.now();
  for (const entry of state.entries) {
    if (entry.role !== "assistant" || entry.status !== "streaming" || (pending && entry.replyId === pending.reply_id)) continue;
    const isLast = entry === state.entries[state.entries.length - 1];
    if (isLast && now - entry.createdAt.getTime() < RECENT_MESSAGE_MS) {
      entry.replyId = entry.id;
      entry.thinking = !entry.text;
      indexEntry(entry);
    } else {
      entry.status = "failed";
      entry.error = { code: "interrupted" };
    }
  }

  // Keep what the customer sent that the server has not accepted yet, and this visit's notices.
  for (const entry of previousEntries) {
    const unaccepted = entry.role === "customer" && entry.id == null;
    const localNotice = entry.role === "system" && entry.local;
    if (unaccepted || localNotice) {
      entry.element = null;
      state.entries.push(entry);
      indexEntry(entry);
    }
  }

  // The last customer message may still be waiting for its answer (queued on the server).
  const last = state.entries[state.entries.length - 1];
  const inProgress = currentStreamingReply();
  renderAll();
  if (!inProgress && !state.handoff && last && last.role === "customer" && last.id != null
    && now - last.createdAt.getTime() < RECENT_MESSAGE_MS) {
    createAwaitingReply(last);
  }
  for (const entry of state.entries) {
    if (entry.role === "assistant" && entry.status === "streaming") armReplyTimer(entry);
  }
  updateStopButton();
  updateHeader();
  scrollToBottom(true);
  flushOutbox();
  updateQueuedNotes();
}

export function onMessageAccepted(frame) {
  const message = frame.message && typeof frame.message === "object" ? frame.message : {};
  const clientId = frame.client_id || message.client_id;
  const outboxItem = clientId ? state.outbox.get(clientId) : null;
  if (clientId) state.outbox.delete(clientId);
  let entry = clientId ? state.byClientId.get(clientId) : null;
  const alreadyAccepted = entry && entry.id != null;
  const existing = findById(message.id);
  if (existing && entry && existing !== entry) {
    // The history after a reconnect already holds this message: keep that copy.
    removeEntry(entry);
    entry = existing;
  }
  if (!entry) {
    if (existing) return;
    entry = appendEntry(entryFromMessage(Object.assign({ role: "customer" }, message)));
  } else {
    const localPreviews = entry.attachments;
    applyMessage(entry, message);
    entry.sendFailed = false;
    entry.waitingUploads = false;
    if (!message.status) entry.status = "complete";
    if (!entry.attachments.length && localPreviews.length) entry.attachments = localPreviews;
    renderEntry(entry);
  }
  if (alreadyAccepted) return;
  bridge.emit("message.sent", {
    id: entry.id, client_id: clientId || null, text: entry.text,
    attachments: (outboxItem && outboxItem.frame.attachments) || [],
  });
  if (state.handoff) return;
  // No reply was queued (the message itself handed off, or the conversation is closed): none comes.
  if (frame.reply_id === null) return;
  if (state.awaiting || currentStreamingReply()) return;
  const index = state.entries.indexOf(entry);
  const answered = state.entries.slice(index + 1).some((later) => later.role === "assistant" || later.role === "agent");
  if (!answered) createAwaitingReply(entry);
}

export function replyEntryFor(replyId) {
  let entry = findReply(replyId);
  if (!entry && state.awaiting) {
    entry = state.awaiting;
  }
  if (!entry) {
    entry = appendEntry(makeEntry({ role: "assistant", status: "streaming", thinking: true }));
    entry.answersTo = lastCustomerEntry();
  }
  if (state.awaiting === entry) state.awaiting = null;
  if (replyId != null && entry.replyId == null) {
    entry.replyId = replyId;
    indexEntry(entry);
  }
  return entry;
}

export function onReplyStarted(frame) {
  const entry = replyEntryFor(frame.reply_id);
  if (frame.message && typeof frame.message === "object") applyMessage(entry, frame.message);
  const answered = findById(frame.message_id || frame.in_reply_to);
  if (answered) entry.answersTo = answered;
  if (!entry.answersTo) entry.answersTo = lastCustomerEntry();
  if (entry.status !== "streaming") {
    entry.status = "streaming";
    entry.error = null;
  }
  entry.thinking = !entry.text;
  renderEntry(entry);
  armReplyTimer(entry);
  updateStopButton();
  scrollToBottom(false);
}

export function onReplyDelta(frame) {
  const entry = replyEntryFor(frame.reply_id);
  const seq = Number.isInteger(frame.seq) ? frame.seq : null;
  if (seq !== null && seq <= entry.lastSeq) return;
  if (seq !== null) entry.lastSeq = seq;
  const wasThinking = entry.thinking && !entry.text;
  entry.text += typeof frame.text === "string" ? frame.text : "";
  entry.thinking = false;
  if (entry.status !== "streaming") {
    // A late delta after a local timeout revives the reply.
    entry.status = "streaming";
    entry.error = null;
    renderEntry(entry);
  } else if (wasThinking) {
    entry.thinkingShown = true;
  }
  armReplyTimer(entry);
  scheduleTextRender(entry);
  updateStopButton();
}

export function onReplyDone(frame) {
  const message = frame.message && typeof frame.message === "object" ? frame.message : {};
  const replyId = frame.reply_id != null ? frame.reply_id : message.id;
  let entry = findReply(replyId) || findById(message.id);
  if (!entry) entry = replyEntryFor(replyId);
  if (state.awaiting === entry) state.awaiting = null;
  const duplicate = findById(message.id);
  if (duplicate && duplicate !== entry) removeEntry(duplicate);
  const wasFinished = entry.status === "complete" && entry.id != null && entry.id === message.id;
  applyMessage(entry, message);
  if (!message.status) entry.status = "complete";
  if (entry.status === "streaming") entry.status = "complete";
  entry.thinking = false;
  entry.error = null;
  clearReplyTimer(entry);
  dirtyEntries.delete(entry);
  renderEntry(entry);
  updateStopButton();
  scrollToBottom(false);
  if (wasFinished) return;
  const spoken = entry.textElement ? entry.textElement.textContent.trim() : entry.text;
  if (spoken) announce(t("announceReply", { name: assistantTitle(), text: spoken }));
  // The host page is another origin: its citations' links are given absolute, on the platform.
  const citations = entry.citations.map((citation) => Object.assign({}, citation,
    { url: absoluteHttpUrl(citation && citation.url, `${config.platformOrigin}/`) }));
  bridge.emit("reply.done", { id: entry.id, text: entry.text, status: entry.status, citations });
  bridge.noteIncoming();
  if (entry.status === "complete") {
    state.completedRepliesThisVisit += 1;
    maybeOfferCsat();
  }
}

export function onReplyError(frame) {
  const entry = replyEntryFor(frame.reply_id);
  entry.status = "failed";
  entry.thinking = false;
  entry.error = { code: frame.code || "unknown", detail: frame.detail || "" };
  if (frame.message && typeof frame.message === "object") {
    applyMessage(entry, frame.message);
    entry.status = "failed";
  }
  clearReplyTimer(entry);
  dirtyEntries.delete(entry);
  renderEntry(entry);
  updateStopButton();
  scrollToBottom(false);
  announce(joinSentences(replyErrorText(entry), t("errorOffer")));
  bridge.emit("reply.error", { code: entry.error.code, detail: entry.error.detail });
}

export function upsertMessage(message) {
  const existing = findById(message.id);
  if (existing) {
    applyMessage(existing, message);
    renderEntry(existing);
    return existing;
  }
  return appendEntry(entryFromMessage(message));
}

export function onErrorFrame(frame) {
  const code = frame.code || "unknown";
  const known = strings.frameErrors[code];
  showNotice(known || (frame.detail ? t("frameErrors.unknown", { detail: frame.detail }) : t("replyErrors.unknown")));
  // A message that was refused (for example over the rate limit) is marked so it can be re-sent.
  let refused = frame.client_id ? state.byClientId.get(frame.client_id) : null;
  if (!refused && code === "rate_limited") {
    const waiting = Array.from(state.outbox.values()).filter((item) => item.sentAt);
    refused = waiting.length ? waiting[waiting.length - 1].entry : null;
  }
  if (refused && refused.id == null) {
    state.outbox.delete(refused.clientId);
    refused.sendFailed = true;
    refused.sendError = known || frame.detail || t("notSent");
    renderEntry(refused);
  }
}
