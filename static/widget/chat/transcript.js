/*
 * The transcript: entries made from messages, drawn and redrawn as frames arrive, day
 * separators, citations, reply errors, the streaming render loop and the reply timers.
 */

import { resendCustomerEntry, retryReply } from "./composer.js";
import { config } from "./config.js";
import { absoluteHttpUrl, h, icon, nextKey, parseDate } from "./dom.js";
import { renderFeedbackButtons, renderFeedbackComment } from "./feedback.js";
import { requestHandoff } from "./handoff.js";
import { citationMarkerNumbers, linkCitationMarkers, renderMarkdownInto } from "./markdown.js";
import { assistantTitle, greetingText, joinSentences, strings, t } from "./messages.js";
import { isConnected } from "./socket.js";
import { state } from "./state.js";
import { hasRunningToolCall, renderToolCalls } from "./tools.js";
import { openLightbox, ui } from "./ui.js";

const timeFormat = new Intl.DateTimeFormat(config.locale, { hour: "numeric", minute: "2-digit" });

const dayFormat = new Intl.DateTimeFormat(config.locale, { year: "numeric", month: "long", day: "numeric", weekday: "short" });

export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

export function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(date) === dayKey(today)) return t("today");
  if (dayKey(date) === dayKey(yesterday)) return t("yesterday");
  return dayFormat.format(date);
}

export function isNearBottom() {
  const element = ui.transcript;
  return element.scrollHeight - element.scrollTop - element.clientHeight < 120;
}

export function scrollToBottom(force) {
  if (!force && !stickToBottom) return;
  window.requestAnimationFrame(() => {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  });
}

let stickToBottom = true;

// Whether new text keeps the transcript scrolled to the end (the customer has not scrolled up).
export function setStickToBottom(value) {
  stickToBottom = value;
}

export function makeEntry(fields) {
  return Object.assign({
    key: nextKey(),
    id: null,
    clientId: null,
    role: "assistant",
    text: "",
    status: "complete",
    attachments: [],
    citations: [],
    source: null,
    createdAt: new Date(),
    replyId: null,
    lastSeq: -1,
    thinking: false,
    error: null,
    local: false,
    answersTo: null,
    retried: false,
    truncated: false,
    // The business tools the reply called (chat/tools.js), each {callId, name, summary, state, outcome}.
    toolCalls: [],
    toolListElement: null,
    toolLineElements: null,
    timer: null,
    element: null,
  }, fields);
}

export function entryFromMessage(message) {
  return makeEntry({
    id: message.id,
    role: ["customer", "assistant", "agent", "system"].includes(message.role) ? message.role : "system",
    text: typeof message.text === "string" ? message.text : "",
    status: message.status || "complete",
    attachments: Array.isArray(message.attachments) ? message.attachments : [],
    citations: Array.isArray(message.citations) ? message.citations : [],
    source: typeof message.source === "string" ? message.source : null,
    createdAt: parseDate(message.created_at),
    agentName: message.agent_name || (message.agent && message.agent.name) || null,
    truncated: message.truncated === true,
    error: messageError(message),
  });
}

// A failed reply's saved error ({code, detail}), so a reloaded reply says what reply.error said live.
function messageError(message) {
  const error = message.error;
  if (!error || typeof error !== "object") return null;
  return { code: typeof error.code === "string" ? error.code : "", detail: typeof error.detail === "string" ? error.detail : "" };
}

export function applyMessage(entry, message) {
  if (message.id != null) entry.id = message.id;
  if (typeof message.text === "string") entry.text = message.text;
  if (message.status) entry.status = message.status;
  if (Array.isArray(message.attachments)) entry.attachments = message.attachments;
  if (Array.isArray(message.citations)) entry.citations = message.citations;
  if (typeof message.source === "string") entry.source = message.source;
  if (message.created_at) entry.createdAt = parseDate(message.created_at);
  if (message.agent_name) entry.agentName = message.agent_name;
  if (typeof message.truncated === "boolean") entry.truncated = message.truncated;
  if (message.error !== undefined) {
    const error = messageError(message);
    // A reply failed here (a timeout, say) keeps its own reason when the message carries none.
    if (error || entry.status !== "failed") entry.error = error;
  }
  indexEntry(entry);
}

export function indexEntry(entry) {
  if (entry.id != null) state.byId.set(String(entry.id), entry);
  if (entry.clientId) state.byClientId.set(entry.clientId, entry);
  if (entry.replyId != null) state.replies.set(String(entry.replyId), entry);
}

export function findById(id) {
  return id == null ? null : state.byId.get(String(id)) || null;
}

export function findReply(replyId) {
  return replyId == null ? null : state.replies.get(String(replyId)) || findById(replyId);
}

function statusForDisplay(entry) {
  if (entry.role === "customer" && entry.id == null) return entry.sendFailed ? "failed" : "sending";
  return entry.status;
}

export function renderEntry(entry) {
  if (!entry.element) {
    entry.element = h("div", { testid: "message" });
  }
  const element = entry.element;
  element.className = `cs-message cs-message--${entry.role}`;
  element.dataset.role = entry.role;
  element.dataset.status = statusForDisplay(entry);
  element.dataset.messageId = entry.id == null ? "" : String(entry.id);
  element.dataset.key = entry.key;

  if (entry.role === "system") {
    element.replaceChildren(h("p", { class: "cs-system", testid: "message-text", text: entry.text }));
    return element;
  }

  const body = h("div", { class: "cs-message__body" });
  if (entry.role === "assistant" || entry.role === "agent") {
    body.append(entry.role === "agent"
      ? h("div", { class: "cs-message__label" },
        entry.agentName ? h("span", { class: "cs-message__name", text: entry.agentName }) : null,
        h("span", { class: "cs-badge", testid: "agent-label", text: t("agentLabel") }))
      : h("div", { class: "cs-message__label" }, h("span", { class: "cs-message__name", text: assistantTitle() }),
        renderSourceLabel(entry)));
  }

  if (entry.role === "customer") {
    if (entry.attachments.length) body.append(renderAttachments(entry));
    if (entry.text) {
      body.append(h("div", { class: "cs-bubble" },
        h("p", { class: "cs-message__text cs-plain", testid: "message-text", text: entry.text })));
    }
  } else {
    const bubble = h("div", { class: "cs-bubble" });
    const toolCalls = entry.role === "assistant" ? renderToolCalls(entry) : null;
    if (toolCalls) bubble.append(toolCalls);
    // A running tool's spinner says the assistant is at work: no thinking dots beside it.
    if (entry.thinking && !entry.text && !hasRunningToolCall(entry)) {
      bubble.append(h("div", { class: "cs-thinking", testid: "thinking", role: "img", "aria-label": t("thinking") },
        h("span"), h("span"), h("span")));
    }
    entry.textElement = h("div", { class: "cs-message__text cs-markdown", testid: "message-text" });
    if (entry.role === "agent") {
      entry.textElement.classList.add("cs-plain");
      entry.textElement.textContent = entry.text;
    } else if (entry.text) {
      renderReplyText(entry);
    }
    if (entry.text || !entry.thinking) bubble.append(entry.textElement);
    if (entry.status === "streaming" && entry.text) bubble.classList.add("is-streaming");
    if (entry.attachments.length) bubble.append(renderAttachments(entry));
    body.append(bubble);
    // The model stopped at its token limit (finish_reason "length"): say the answer is incomplete.
    if (entry.role === "assistant" && entry.truncated && entry.status !== "streaming") {
      body.append(h("p", { class: "cs-truncated", testid: "truncated-note" }, icon("alert"), h("span", { text: t("truncated") })));
    }
    if (entry.role === "assistant" && entry.citations.length) body.append(renderCitations(entry));
    if (entry.status === "failed") body.append(renderReplyError(entry));
  }

  const meta = renderMeta(entry);
  if (meta) body.append(meta);
  if (entry.role === "assistant" && entry.feedbackOpen) body.append(renderFeedbackComment(entry));

  const avatar = entry.role === "assistant"
    ? h("div", { class: "cs-avatar cs-avatar--assistant", "aria-hidden": "true" }, icon("sparkle"))
    : entry.role === "agent"
      ? h("div", { class: "cs-avatar cs-avatar--agent", "aria-hidden": "true", text: initials(entry.agentName) || "" },
        entry.agentName ? null : icon("person"))
      : null;
  element.replaceChildren(...[avatar, body].filter(Boolean));
  return element;
}

function initials(name) {
  if (!name) return "";
  const trimmed = String(name).trim();
  if (/[\u3400-\u9fff]/.test(trimmed)) return trimmed.slice(-2);
  return trimmed.split(/\s+/).slice(0, 2).map((part) => part[0]).join("").toUpperCase();
}

export function renderAttachments(entry) {
  const list = h("div", { class: "cs-attachments" + (entry.attachments.length === 1 ? " is-single" : "") });
  entry.attachments.forEach((attachment, index) => {
    const source = attachment.previewUrl || attachment.thumbnail_url || attachment.url;
    const full = attachment.url || attachment.previewUrl;
    if (!source) return;
    const image = h("img", {
      src: source, alt: t("imageAlt", { index: index + 1 }), loading: "lazy", decoding: "async",
    });
    if (attachment.width && attachment.height) {
      image.width = attachment.width;
      image.height = attachment.height;
    }
    list.append(h("button", {
      type: "button", class: "cs-attachment", "aria-label": `${t("openImage")} ${index + 1}`,
      onclick: () => openLightbox(full, t("imageAlt", { index: index + 1 })),
    }, image));
  });
  return list;
}

// The sources a reply cites, each once, numbered as the customer sees them (in the Sources row and
// in the text's superscripts), with a link made absolute against the platform's origin: the widget
// may be shown inside a page of another site, and /kb/ is the platform's.
export function citationSources(entry) {
  const sources = [];
  const byKey = new Map();
  const forCitation = [];
  for (const citation of entry.citations) {
    const title = citation && typeof citation.title === "string" && citation.title.trim() ? citation.title.trim() : "";
    const href = citation ? absoluteHttpUrl(citation.url, `${config.platformOrigin}/`) : null;
    if (!title && !href) {
      forCitation.push(null);
      continue;
    }
    const key = href || `title:${title}`;
    let source = byKey.get(key);
    if (!source) {
      const number = sources.length + 1;
      const name = title || href;
      source = { number, href, title: name, label: `${t("sourceLink", { number, title: name })} ${t("opensInNewTab")}` };
      sources.push(source);
      byKey.set(key, source);
    }
    forCitation.push(source);
  }
  return { sources, byMarker: markerMap(entry, forCitation) };
}

// Which source each marker number of the text names. A citation that says which markers name it
// ("markers": [3]) is taken at its word. Otherwise the server's rule is followed backwards
// (inference/grounding.py): citations come in the order the reply first cites them, and a marker
// past the last source ([7] of three, which a small model writes) names none and is dropped. So the
// smallest distinct marker numbers, as many as there are citations, are the ones that named a
// source, and the first of them used is the first citation. Fewer markers than citations cannot
// be matched up: then no marker links rather than one linking wrongly.
function markerMap(entry, forCitation) {
  const byMarker = new Map();
  const explicit = entry.citations.every((citation) => citation && Array.isArray(citation.markers));
  if (explicit) {
    entry.citations.forEach((citation, index) => {
      for (const number of citation.markers) if (Number.isInteger(number)) byMarker.set(number, forCitation[index]);
    });
  } else {
    const numbers = citationMarkerNumbers(entry.text);
    if (numbers.length >= forCitation.length) {
      const naming = new Set([...numbers].sort((first, second) => first - second).slice(0, forCitation.length));
      numbers.filter((number) => naming.has(number)).forEach((number, index) => byMarker.set(number, forCitation[index]));
    }
  }
  for (const [number, source] of byMarker) if (!source || !source.href) byMarker.delete(number);
  return byMarker;
}

// An assistant reply's text: Markdown, sanitised, then its citation markers made links to its sources.
export function renderReplyText(entry) {
  renderMarkdownInto(entry.textElement, entry.text);
  if (!entry.citations.length || entry.status === "streaming") return;
  const { byMarker } = citationSources(entry);
  if (byMarker.size) linkCitationMarkers(entry.textElement, (number) => byMarker.get(number) || null);
}

// A discreet note of where an answer came from when no model wrote it: an FAQ entry, or a passage
// quoted from the knowledge base (with its citation: without one, the reply is the sentence saying
// that nothing was found, which comes from no article).
export function renderSourceLabel(entry) {
  const quoted = entry.source === "knowledge" && entry.citations.length > 0;
  const text = entry.source === "faq" ? t("fromFaq") : quoted ? t("fromKnowledge") : null;
  if (!text) return null;
  return h("span", { class: "cs-source-label", testid: "source-label", "data-source": entry.source, text });
}

export function renderCitations(entry) {
  const { sources } = citationSources(entry);
  if (!sources.length) return null;
  const titleId = `cs-sources-${entry.key}`;
  // role="list": a list styled without bullets stays a list for screen readers (Safari drops it).
  const list = h("ol", { class: "cs-citations__list", role: "list", "aria-labelledby": titleId });
  for (const source of sources) {
    const number = h("span", { class: "cs-citation__number", "aria-hidden": "true", text: String(source.number) });
    list.append(h("li", { class: "cs-citation", testid: "citation" }, source.href
      ? h("a", { href: source.href, target: "_blank", rel: "noopener", title: source.title, testid: "citation-link" },
        number, h("span", { class: "cs-citation__title", text: source.title }),
        h("span", { class: "cs-visually-hidden", text: ` ${t("opensInNewTab")}` }), icon("link"))
      : h("span", { class: "cs-citation__plain" }, number, h("span", { class: "cs-citation__title", text: source.title }))));
  }
  return h("div", { class: "cs-citations", testid: "citations" },
    h("p", { class: "cs-citations__title", id: titleId, text: t("sources") }), list);
}

export function replyErrorText(entry) {
  const code = entry.error && entry.error.code;
  const known = code && strings.replyErrors[code];
  if (known) return known;
  if (entry.error && entry.error.detail) return String(entry.error.detail);
  return strings.replyErrors.unknown;
}

export function renderReplyError(entry) {
  const actions = h("div", { class: "cs-reply-error__actions" });
  if (!entry.retried && findAnsweredCustomerEntry(entry)) {
    actions.append(h("button", {
      type: "button", class: "cs-chip-button", testid: "retry-button", onclick: () => retryReply(entry),
    }, icon("refresh"), h("span", { text: t("retry") })));
  }
  if (!state.handoff) {
    actions.append(h("button", {
      type: "button", class: "cs-chip-button", testid: "error-handoff-button",
      onclick: () => requestHandoff(`reply_error:${(entry.error && entry.error.code) || "unknown"}`),
    }, icon("headset"), h("span", { text: t("talkToPerson") })));
  }
  return h("div", { class: "cs-reply-error", testid: "reply-error", "data-code": (entry.error && entry.error.code) || "" },
    h("p", { class: "cs-reply-error__text" }, icon("alert"),
      h("span", { text: joinSentences(replyErrorText(entry), t("errorOffer")) })),
    actions);
}

export function renderMeta(entry) {
  const meta = h("div", { class: "cs-message__meta" });
  if (entry.role === "customer" && entry.id == null) {
    if (entry.sendFailed) {
      meta.append(h("span", { class: "cs-meta-error", text: entry.sendError || t("notSent") }),
        h("button", {
          type: "button", class: "cs-link-button", testid: "retry-button", onclick: () => resendCustomerEntry(entry),
        }, t("retry")));
    } else {
      meta.append(h("span", {
        class: "cs-meta-pending",
        text: entry.waitingUploads ? t("waitingUploads") : isConnected() || !state.conversation ? t("sending") : t("queued"),
      }));
    }
    return meta;
  }
  meta.append(h("time", { datetime: entry.createdAt.toISOString(), text: timeFormat.format(entry.createdAt) }));
  if (entry.role === "assistant") {
    if (entry.status === "cancelled") meta.append(h("span", { class: "cs-meta-note", text: t("stopped") }));
    if ((entry.status === "complete" || entry.status === "cancelled") && entry.id != null && entry.text) {
      meta.append(renderFeedbackButtons(entry));
    }
  }
  return meta;
}

export function renderWelcome() {
  return h("div", { class: "cs-welcome" },
    h("div", { class: "cs-welcome__avatar", "aria-hidden": "true" }, icon("sparkle")),
    h("p", { class: "cs-welcome__title", text: assistantTitle() }),
    h("p", { class: "cs-welcome__text", text: t("welcomeText") }));
}

export function renderGreeting() {
  return h("div", { class: "cs-message cs-message--assistant cs-message--greeting", testid: "greeting" },
    h("div", { class: "cs-avatar cs-avatar--assistant", "aria-hidden": "true" }, icon("sparkle")),
    h("div", { class: "cs-message__body" },
      h("div", { class: "cs-message__label" }, h("span", { text: assistantTitle() })),
      h("div", { class: "cs-bubble" }, h("p", { class: "cs-message__text cs-plain", testid: "greeting-text", text: greetingText() }))));
}

export function renderDaySeparator(date) {
  return h("div", { class: "cs-day", role: "separator" }, h("span", { text: dayLabel(date) }));
}

// Rebuild the whole transcript (on ready, on a new conversation).
export function renderAll() {
  const children = [renderWelcome(), renderGreeting()];
  let lastDay = null;
  for (const entry of state.entries) {
    const day = dayKey(entry.createdAt);
    if (day !== lastDay) {
      // The first separator is left out when everything happened today: it adds nothing.
      if (lastDay !== null || day !== dayKey(new Date())) children.push(renderDaySeparator(entry.createdAt));
      lastDay = day;
    }
    children.push(renderEntry(entry));
  }
  if (state.csatPromptElement) children.push(state.csatPromptElement);
  ui.transcriptInner.replaceChildren(...children);
  updateStopButton();
}

export function appendEntry(entry) {
  const previous = state.entries[state.entries.length - 1];
  state.entries.push(entry);
  indexEntry(entry);
  const element = renderEntry(entry);
  const day = dayKey(entry.createdAt);
  const anchor = state.csatPromptElement && state.csatPromptElement.isConnected ? state.csatPromptElement : null;
  if (previous && dayKey(previous.createdAt) !== day) ui.transcriptInner.insertBefore(renderDaySeparator(entry.createdAt), anchor);
  ui.transcriptInner.insertBefore(element, anchor);
  scrollToBottom(entry.role === "customer");
  return entry;
}

export function removeEntry(entry) {
  clearTimeout(entry.timer);
  const index = state.entries.indexOf(entry);
  if (index >= 0) state.entries.splice(index, 1);
  if (entry.element) entry.element.remove();
  if (entry.clientId && state.byClientId.get(entry.clientId) === entry) state.byClientId.delete(entry.clientId);
  if (state.awaiting === entry) state.awaiting = null;
}

export function addLocalNotice(text) {
  return appendEntry(makeEntry({ role: "system", text, local: true }));
}

// Streaming text is drawn at most once per frame, however fast deltas arrive.
export const dirtyEntries = new Set();

let frameScheduled = false;

export function scheduleTextRender(entry) {
  dirtyEntries.add(entry);
  if (frameScheduled) return;
  frameScheduled = true;
  window.requestAnimationFrame(() => {
    frameScheduled = false;
    const shouldStick = stickToBottom;
    for (const dirty of dirtyEntries) {
      if (!dirty.element || !dirty.textElement || !dirty.textElement.isConnected || dirty.thinkingShown) {
        renderEntry(dirty);
      } else {
        renderReplyText(dirty);
      }
      dirty.thinkingShown = false;
    }
    dirtyEntries.clear();
    if (shouldStick) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  });
}

export function updateQueuedNotes() {
  for (const entry of state.entries) {
    if (entry.role === "customer" && entry.id == null && !entry.sendFailed) renderEntry(entry);
  }
}

export function updateStopButton() {
  const streaming = currentStreamingReply();
  ui.stopButton.hidden = !(streaming && isConnected());
}

export function currentStreamingReply() {
  for (let index = state.entries.length - 1; index >= 0; index -= 1) {
    const entry = state.entries[index];
    if (entry.role === "assistant" && entry.status === "streaming" && entry.replyId != null) return entry;
  }
  return null;
}

export function findAnsweredCustomerEntry(reply) {
  if (reply.answersTo && state.entries.includes(reply.answersTo)) return reply.answersTo;
  const index = state.entries.indexOf(reply);
  for (let position = index - 1; position >= 0; position -= 1) {
    const entry = state.entries[position];
    if (entry.role === "customer") return entry;
  }
  return null;
}

export function lastCustomerEntry() {
  for (let index = state.entries.length - 1; index >= 0; index -= 1) {
    if (state.entries[index].role === "customer") return state.entries[index];
  }
  return null;
}

export function armReplyTimer(entry) {
  clearTimeout(entry.timer);
  entry.timer = null;
  if (!isConnected()) return;
  entry.timer = window.setTimeout(() => replyTimedOut(entry), config.replyTimeoutMs);
}

export function clearReplyTimer(entry) {
  clearTimeout(entry.timer);
  entry.timer = null;
}

function replyTimedOut(entry) {
  entry.timer = null;
  if (!state.entries.includes(entry)) return;
  if (entry.status !== "streaming") return;
  entry.status = "failed";
  entry.thinking = false;
  entry.error = { code: "timeout" };
  if (state.awaiting === entry) state.awaiting = null;
  renderEntry(entry);
  updateStopButton();
  scrollToBottom(false);
}

export function pauseReplyTimers() {
  for (const entry of state.entries) clearReplyTimer(entry);
}

export function createAwaitingReply(customerEntry) {
  const entry = makeEntry({
    role: "assistant", status: "streaming", thinking: true, local: true, answersTo: customerEntry,
  });
  state.awaiting = entry;
  appendEntry(entry);
  armReplyTimer(entry);
  scrollToBottom(false);
  return entry;
}
