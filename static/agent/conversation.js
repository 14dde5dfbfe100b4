/*
 * The middle column: the open conversation's ticket header (trigger, reason, waited, timers,
 * assignee), its actions (claim, resolve, hand back) and the transcript with images, citations,
 * ratings, internal notes, notices and the assistant's replies as they stream.
 */

import { ApiError, api, reloadIfSignedOut } from "./api.js";
import { onAssistCustomerMessage, renderComposer, resetAssist } from "./composer.js";
import { announce, h, icon, parseDate, preview, safeHref } from "./dom.js";
import { linkCitationMarkers, renderMarkdownInto } from "../widget/chat/markdown.js";
import { markSeen, renderQueue, triggerLabel } from "./queue.js";
import { send } from "./socket.js";
import { isMine, state } from "./state.js";
import { formatDuration, t } from "./strings.js";

const TYPING_SHOWN_MS = 6000;
let typingTimer = null;
let noticeTimer = null;

// Open a conversation: the socket's `open` (transcript and live messages), or REST while offline.
export function openConversation(conversationId, { focusTranscript = false } = {}) {
  if (!conversationId) return;
  if (state.selected !== conversationId) {
    for (const previous of state.opened) {
      if (previous !== conversationId) send({ type: "leave", conversation: previous });
    }
    state.opened.clear();
    state.selected = conversationId;
    state.detail = null;
    state.messages = new Map();
    state.loadError = null;
    state.customerTypingUntil = 0;
    state.colleagueTyping = null;
    state.composer = { text: "", mode: "reply", sending: false, error: null };
    resetAssist();
    showNotice(null);
  }
  state.opened.add(conversationId);
  state.loading = true;
  renderConversation();
  renderQueue();
  if (!send({ type: "open", conversation: conversationId })) {
    api
      .conversation(conversationId)
      .then((detail) => {
        if (state.selected === conversationId) onConversationOpened(detail);
      })
      .catch((error) => {
        if (reloadIfSignedOut(error) || state.selected !== conversationId) return;
        state.loading = false;
        state.loadError = error.detail;
        renderConversation();
      });
  }
  if (focusTranscript) {
    const heading = document.getElementById("ac-conversation-heading");
    if (heading) heading.focus();
  }
}

// conversation.opened (or the REST detail): the whole transcript as saved.
export function onConversationOpened(frame) {
  const conversation = frame.conversation;
  if (!conversation || conversation.id !== state.selected) return;
  state.loading = false;
  state.loadError = null;
  state.detail = { conversation, ticket: frame.ticket || null, tickets: frame.tickets || [] };
  const streaming = new Map([...state.messages.values()].filter((message) => message.status === "streaming").map((message) => [message.id, message]));
  state.messages = new Map();
  for (const message of frame.messages || []) {
    const local = streaming.get(message.id);
    // A reply still streaming is saved without its text so far: the deltas already shown (and the
    // last seq they reached) stay, or the next delta would build on "" and the start would vanish.
    if (local && message.status === "streaming") state.messages.set(message.id, { ...message, text: local.text, lastSeq: local.lastSeq });
    else state.messages.set(message.id, message);
  }
  for (const [id, message] of streaming) if (!state.messages.has(id)) state.messages.set(id, message);
  // The server's progress of that reply (text so far, last seq): wins over a local copy that is behind.
  const pending = frame.pending_reply;
  const reply = pending && state.messages.get(pending.reply_id);
  if (reply && reply.status === "streaming" && typeof pending.text === "string" && Number.isInteger(pending.seq) && pending.seq > (reply.lastSeq ?? -1)) {
    state.messages.set(reply.id, { ...reply, text: pending.text, lastSeq: pending.seq });
  }
  renderConversation();
  markLastSeen();
}

function lastMessageId() {
  let last = null;
  for (const id of state.messages.keys()) if (Number.isInteger(id) && (last === null || id > last)) last = id;
  return last;
}

// The agent read the open conversation as far as its last saved message.
export function markLastSeen() {
  const last = lastMessageId();
  if (last !== null) markSeen(state.selected, last);
}

export function onConversationMessage(frame) {
  const message = frame.message;
  if (!message || frame.conversation !== state.selected || !state.detail) return;
  const isNew = !state.messages.has(message.id);
  state.messages.set(message.id, message);
  upsertMessageElement(message);
  if (isNew && message.role === "customer") {
    state.customerTypingUntil = 0;
    renderTyping();
    announce(t("message.new", { preview: preview(message.text, 80) }));
    onAssistCustomerMessage(message);
  } else if (isNew && message.role === "agent" && !(state.me && message.author && message.author.id === state.me.id)) {
    announce(t("message.agentNew", { name: message.author ? message.author.name : t("role.agent"), preview: preview(message.text, 80) }));
  }
  markLastSeen();
}

// A message this console saved: shown at once (the socket's copy is the same id). A first public
// answer's first-response time comes with the ticket.updated the server sends for it.
export function onMessageSaved(frame) {
  onConversationMessage(frame);
}

export function onTicketUpdated(frame) {
  if (frame.conversation !== state.selected || !state.detail || !frame.ticket) return;
  const ticket = frame.ticket;
  state.detail.ticket = ticket;
  const index = state.detail.tickets.findIndex((item) => item.id === ticket.id);
  if (index >= 0) state.detail.tickets[index] = ticket;
  else state.detail.tickets.unshift(ticket);
  renderHeader();
  renderComposer();
}

export function onReplyDelta(frame) {
  if (frame.conversation !== state.selected || !state.detail) return;
  let message = state.messages.get(frame.reply_id);
  if (!message) {
    message = { id: frame.reply_id, role: "assistant", text: "", status: "streaming", attachments: [], citations: [], lastSeq: -1 };
    state.messages.set(frame.reply_id, message);
  }
  if (message.status !== "streaming") return;
  if (Number.isInteger(frame.seq)) {
    if (frame.seq <= (message.lastSeq ?? -1)) return;
    message.lastSeq = frame.seq;
  }
  message.text += typeof frame.text === "string" ? frame.text : "";
  if (elements.has(message.id)) scheduleTextRender(message.id);
  else upsertMessageElement(message);
}

export function onTyping(frame) {
  if (frame.conversation !== state.selected) return;
  if (frame.from === "customer") {
    state.customerTypingUntil = Date.now() + TYPING_SHOWN_MS;
  } else if (frame.from === "agent") {
    state.colleagueTyping = {
      name: frame.agent ? frame.agent.name : t("role.agent"),
      internal: Boolean(frame.internal),
      until: Date.now() + TYPING_SHOWN_MS,
    };
  }
  renderTyping();
}

function renderTyping() {
  const element = document.getElementById("ac-typing");
  if (!element) return;
  const now = Date.now();
  const parts = [];
  if (state.customerTypingUntil > now) parts.push(t("typing.customer"));
  if (state.colleagueTyping && state.colleagueTyping.until > now) {
    const { name, internal } = state.colleagueTyping;
    parts.push(t(internal ? "typing.agentNote" : "typing.agent", { name }));
  }
  element.textContent = parts.join(" · ");
  element.hidden = parts.length === 0;
  window.clearTimeout(typingTimer);
  if (parts.length) typingTimer = window.setTimeout(renderTyping, 1000);
}

// A sentence under the actions: what an action did, or why it did not.
export function showNotice(text, { error = false } = {}) {
  const element = document.getElementById("ac-notice");
  if (!element) return;
  window.clearTimeout(noticeTimer);
  element.textContent = text || "";
  element.hidden = !text;
  element.className = "ac-notice" + (error ? " ac-notice--error" : "");
  element.setAttribute("role", error ? "alert" : "status");
  if (text && !error) noticeTimer = window.setTimeout(() => showNotice(null), 8000);
}

function actionFailed(error) {
  if (reloadIfSignedOut(error)) return;
  if (error instanceof ApiError && error.code === "already_claimed") {
    const name = error.body && error.body.assignee ? error.body.assignee.name : null;
    showNotice(name ? t("action.claimedByOther", { name }) : error.detail, { error: true });
    // The ticket as it is now: someone else's.
    refreshDetail();
    return;
  }
  showNotice(t("action.failed", { detail: error.detail || t("error.unknown") }), { error: true });
}

function refreshDetail() {
  const id = state.selected;
  if (!id) return;
  if (!send({ type: "open", conversation: id })) {
    api.conversation(id).then((detail) => state.selected === id && onConversationOpened(detail)).catch(() => {});
  }
}

function applyTicket(ticket) {
  if (!state.detail || !ticket) return;
  onTicketUpdated({ conversation: state.selected, ticket });
}

export async function claim() {
  const id = state.selected;
  const ticket = state.detail && state.detail.ticket;
  if (!id || !ticket || ticket.status === "resolved" || isMine(ticket)) return;
  setBusy(true);
  try {
    const data = await api.claim(id);
    applyTicket(data.ticket);
    showNotice(t("action.claimed"));
    const input = document.getElementById("ac-composer-input");
    if (input) input.focus();
  } catch (error) {
    actionFailed(error);
  } finally {
    setBusy(false);
  }
}

async function resolve() {
  const id = state.selected;
  if (!id) return;
  setBusy(true);
  try {
    const data = await api.resolve(id);
    applyTicket(data.ticket);
    showNotice(t("action.resolved"));
  } catch (error) {
    actionFailed(error);
  } finally {
    setBusy(false);
  }
}

async function handBack() {
  const id = state.selected;
  if (!id) return;
  setBusy(true);
  try {
    const data = await api.handBack(id);
    applyTicket(data.ticket);
    showNotice(t("action.handedBack"));
  } catch (error) {
    actionFailed(error);
  } finally {
    setBusy(false);
  }
}

let busy = false;

function setBusy(value) {
  busy = value;
  for (const button of document.querySelectorAll(".ac-actions button")) button.disabled = value || button.dataset.unavailable === "true";
}

function timerValue(seconds) {
  return Number.isFinite(seconds) ? formatDuration(seconds) : null;
}

function field(label, value, testid, extra = {}) {
  return h("div", { class: "ac-field" }, h("dt", { text: label }), h("dd", { testid, ...extra }, value));
}

export function renderHeader() {
  const header = document.getElementById("ac-ticket");
  if (!header) return;
  if (!state.detail) {
    header.replaceChildren();
    header.hidden = true;
    return;
  }
  header.hidden = false;
  const { conversation, ticket } = state.detail;
  const fields = [];
  const headingText = ticket ? `${t("conversation.label")} · ${triggerLabel(ticket)}` : t("conversation.label");
  if (ticket) {
    const created = parseDate(ticket.created_at);
    const claimed = parseDate(ticket.claimed_at);
    const resolved = parseDate(ticket.resolved_at);
    // Waiting ends when someone claims it (or it is resolved unclaimed); until then it ticks.
    const end = claimed || resolved;
    const waited = created && end ? formatDuration((end.getTime() - created.getTime()) / 1000) : null;
    fields.push(field(t("ticket.trigger"), triggerLabel(ticket), "ticket-trigger"));
    if (ticket.reason) fields.push(field(t("ticket.reason"), ticket.reason, "ticket-reason"));
    fields.push(
      field(
        t("ticket.waited"),
        waited || (created ? formatDuration((Date.now() - created.getTime()) / 1000) : "—"),
        "ticket-waited",
        !end && created ? { "data-since": created.toISOString() } : {},
      ),
    );
    const firstResponse = timerValue(ticket.first_response_seconds);
    if (firstResponse) fields.push(field(t("ticket.firstResponse"), firstResponse, "ticket-first-response"));
    const resolution = timerValue(ticket.resolution_seconds);
    if (resolution) fields.push(field(t("ticket.resolution"), resolution, "ticket-resolution"));
    const assignee = ticket.assignee
      ? isMine(ticket)
        ? t("ticket.you", { name: ticket.assignee.name })
        : ticket.assignee.name
      : t("ticket.nobody");
    fields.push(field(t("ticket.assignee"), assignee, "ticket-assignee"));
  }
  fields.push(field(t("ticket.locale"), t(`locale.${conversation.locale}`), "ticket-locale"));
  if (conversation.csat) {
    const csat = conversation.csat;
    fields.push(
      field(
        t("ticket.csat"),
        [t("ticket.csatValue", { score: csat.score }), csat.comment ? ` ${t("message.feedbackComment", { comment: csat.comment })}` : ""].join(""),
        "ticket-csat",
      ),
    );
  }
  const status = ticket ? h("span", { class: `ac-status ac-status--${ticket.status}`, testid: "ticket-status", text: t(`ticket.status.${ticket.status}`) }) : null;
  const actions = [];
  if (ticket && ticket.status !== "resolved") {
    const claimable = !isMine(ticket);
    if (claimable) {
      actions.push(
        h("button", { type: "button", class: "ac-button ac-button--primary", testid: "claim-button", "aria-keyshortcuts": "Alt+C", disabled: busy, onclick: claim, text: t("action.claim") }),
      );
    }
    const mayAct = isMine(ticket) || state.supervisor;
    actions.push(
      h("button", {
        type: "button",
        class: "ac-button",
        testid: "resolve-button",
        title: t("action.resolveHint"),
        "data-unavailable": mayAct ? "false" : "true",
        disabled: !mayAct || busy,
        onclick: resolve,
        text: t("action.resolve"),
      }),
      h("button", {
        type: "button",
        class: "ac-button",
        testid: "handback-button",
        "data-unavailable": mayAct ? "false" : "true",
        disabled: !mayAct || busy,
        onclick: handBack,
        text: t("action.handBack"),
      }),
    );
  }
  const parts = [
    h(
      "div",
      { class: "ac-ticket__top" },
      h("h2", { id: "ac-conversation-heading", class: "ac-ticket__heading", tabindex: "-1", text: headingText }),
      status,
      h("div", { class: "ac-actions", role: "group", "aria-label": t("conversation.label") }, actions),
    ),
    ticket ? null : h("p", { class: "ac-ticket__none", text: t("ticket.none") }),
    h("dl", { class: "ac-fields" }, fields),
  ];
  header.replaceChildren(...parts.filter(Boolean));
}

function roleLabel(message) {
  if (message.role === "agent") return message.author ? message.author.name : message.agent ? message.agent.name : t("role.agent");
  return t(`role.${message.role}`);
}

function timeLabel(message) {
  const date = parseDate(message.created_at);
  return date ? date.toLocaleTimeString(document.documentElement.lang, { hour: "2-digit", minute: "2-digit" }) : "";
}

function citationsElement(message) {
  const citations = Array.isArray(message.citations) ? message.citations : [];
  if (!citations.length) return null;
  return h(
    "div",
    { class: "ac-citations", testid: "message-citations" },
    h("span", { class: "ac-citations__label", text: t("message.sources") }),
    h(
      "ol",
      null,
      citations.map((citation) => {
        const title = String((citation && (citation.title || citation.url)) || "");
        const href = safeHref(citation && citation.url);
        return h("li", null, href ? h("a", { href, target: "_blank", rel: "noopener", text: title }) : title);
      }),
    ),
  );
}

function attachmentsElement(message) {
  const attachments = Array.isArray(message.attachments) ? message.attachments : [];
  if (!attachments.length) return null;
  return h(
    "div",
    { class: "ac-attachments" },
    attachments.map((attachment, index) => {
      const full = safeHref(attachment.url);
      const thumbnail = safeHref(attachment.thumbnail_url) || full;
      if (!full) return null;
      return h(
        "a",
        { href: full, target: "_blank", rel: "noopener", class: "ac-attachment" },
        h("img", {
          src: thumbnail,
          alt: t("message.image", { number: index + 1 }),
          testid: "message-image",
          loading: "lazy",
          width: attachment.width && attachment.height ? Math.min(200, attachment.width) : null,
        }),
      );
    }),
  );
}

function feedbackElement(message) {
  if (!message.feedback) return null;
  // Feedback.Rating: 1 helpful, -1 not.
  const up = Number(message.feedback.rating) > 0;
  return h(
    "div",
    { class: `ac-feedback ac-feedback--${up ? "up" : "down"}`, testid: "message-feedback", "data-rating": String(message.feedback.rating) },
    icon(up ? "thumbUp" : "thumbDown"),
    t(up ? "message.feedback.up" : "message.feedback.down"),
    message.feedback.comment ? ` ${t("message.feedbackComment", { comment: message.feedback.comment })}` : "",
  );
}

function bodyElement(message) {
  const body = h("div", { class: "ac-message__text", testid: "message-text" });
  fillBody(body, message);
  return body;
}

function fillBody(body, message) {
  if (message.role === "assistant") {
    renderMarkdownInto(body, message.text || "");
    const citations = Array.isArray(message.citations) ? message.citations : [];
    if (citations.length) {
      linkCitationMarkers(body, (number) => {
        const citation = citations[number - 1];
        const href = citation && safeHref(citation.url);
        return href ? { number, href, label: String(citation.title || href), title: String(citation.title || "") } : null;
      });
    }
  } else {
    body.textContent = message.text || "";
  }
}

function messageElement(message) {
  const kind = message.internal ? "note" : message.role;
  const mine = message.role === "agent" && state.me && message.author && message.author.id === state.me.id;
  const status = message.status && message.status !== "complete" ? message.status : null;
  const children = [];
  if (message.role === "system") {
    children.push(h("div", { class: "ac-message__text", testid: "message-text", text: message.text || "" }));
  } else {
    children.push(
      h(
        "div",
        { class: "ac-message__meta" },
        message.internal ? h("span", { class: "ac-note-label", testid: "note-label", text: t("message.note") }) : null,
        h("span", { class: "ac-message__who", text: roleLabel(message) }),
        h("time", { class: "ac-message__time", datetime: message.created_at || null, text: timeLabel(message) }),
      ),
      bodyElement(message),
      attachmentsElement(message),
      message.role === "assistant" ? citationsElement(message) : null,
      status === "streaming" ? h("div", { class: "ac-message__status", testid: "message-streaming", text: t("message.streaming") }) : null,
      status === "failed" ? h("div", { class: "ac-message__status ac-message__status--error", text: t("message.failed", { detail: (message.error && message.error.detail) || "" }) }) : null,
      status === "cancelled" ? h("div", { class: "ac-message__status", text: t("message.cancelled") }) : null,
      message.truncated ? h("div", { class: "ac-message__status", text: t("message.truncated") }) : null,
      feedbackElement(message),
    );
  }
  return h(
    "li",
    {
      class: `ac-message ac-message--${kind}` + (mine ? " ac-message--mine" : ""),
      testid: "message",
      "data-role": message.role,
      "data-internal": message.internal ? "true" : "false",
      "data-status": message.status || "complete",
      "data-message": String(message.id),
    },
    children,
  );
}

function sortedMessages() {
  return [...state.messages.values()].sort((a, b) => {
    const at = Date.parse(a.created_at || "") || Infinity;
    const bt = Date.parse(b.created_at || "") || Infinity;
    return at !== bt ? at - bt : a.id - b.id;
  });
}

function nearBottom(container) {
  return container.scrollHeight - container.scrollTop - container.clientHeight < 80;
}

function scrollToBottom(container) {
  container.scrollTop = container.scrollHeight;
}

// The transcript's elements by message id, so that a delta finds its message without a query.
const elements = new Map();
// Messages whose streamed text changed since the last frame was drawn.
const dirtyTexts = new Set();
let textFrameScheduled = false;

// A whole message (new, or its status changed): built again and put in place of the old one.
function upsertMessageElement(message) {
  const list = document.getElementById("ac-messages");
  const scroller = document.getElementById("ac-transcript");
  if (!list || !scroller) return;
  dirtyTexts.delete(message.id);
  const stick = nearBottom(scroller);
  const existing = elements.get(message.id);
  const element = messageElement(message);
  elements.set(message.id, element);
  if (existing && existing.isConnected) existing.replaceWith(element);
  else list.append(element);
  if (stick || message.role === "agent") scrollToBottom(scroller);
}

// Streamed text is drawn at most once per frame (as the widget's transcript does), however fast the
// deltas come: only the text of the message changes, not the element around it.
function scheduleTextRender(id) {
  dirtyTexts.add(id);
  if (textFrameScheduled) return;
  textFrameScheduled = true;
  window.requestAnimationFrame(() => {
    textFrameScheduled = false;
    const scroller = document.getElementById("ac-transcript");
    const stick = scroller ? nearBottom(scroller) : false;
    for (const dirty of dirtyTexts) {
      const message = state.messages.get(dirty);
      const element = elements.get(dirty);
      if (!message) continue;
      const body = element && element.isConnected ? element.querySelector('[data-testid="message-text"]') : null;
      if (body) fillBody(body, message);
      else upsertMessageElement(message);
    }
    dirtyTexts.clear();
    if (scroller && stick) scrollToBottom(scroller);
  });
}

export function renderTranscript() {
  const list = document.getElementById("ac-messages");
  const scroller = document.getElementById("ac-transcript");
  if (!list || !scroller) return;
  elements.clear();
  dirtyTexts.clear();
  const rendered = sortedMessages().map((message) => {
    const element = messageElement(message);
    elements.set(message.id, element);
    return element;
  });
  list.replaceChildren(...rendered);
  scrollToBottom(scroller);
}

export function renderConversation() {
  const empty = document.getElementById("ac-conversation-empty");
  const pane = document.getElementById("ac-conversation-pane");
  if (!empty || !pane) return;
  if (!state.selected) {
    empty.hidden = false;
    empty.textContent = t("conversation.none");
    pane.hidden = true;
    return;
  }
  if (!state.detail) {
    empty.hidden = false;
    empty.textContent = state.loadError ? t("conversation.loadFailed", { detail: state.loadError }) : t("conversation.loading");
    pane.hidden = true;
    return;
  }
  empty.hidden = true;
  pane.hidden = false;
  renderHeader();
  renderTranscript();
  renderTyping();
  renderComposer();
}

// Alt+C claims the conversation on screen.
export function claimShortcut() {
  if (state.detail && state.detail.ticket && !isMine(state.detail.ticket)) claim();
}
