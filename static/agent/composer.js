/*
 * The composer under the transcript: a reply to the customer or an internal note, typing frames
 * while the agent types (throttled), canned replies on `/shortcode`, and the AI draft (agent
 * assist), which streams into the composer for editing and is never sent without the agent.
 */

import { api, reloadIfSignedOut } from "./api.js";
import { announce, h } from "./dom.js";
import { isConnected, send } from "./socket.js";
import { mayReply, state } from "./state.js";
import { locale, t } from "./strings.js";

// The server relays one typing frame per 2 s at most; sending more often is wasted.
const TYPING_INTERVAL_MS = 2000;
let lastTypingSent = 0;
let cannedActive = 0;
let cannedMatches = [];
let cannedOpen = false;
let cannedLoading = null;
// Shows a message the API saved (conversation.js's, set by console.js: the two would import each other).
let showSaved = () => {};

export function setSavedMessageHandler(callback) {
  showSaved = callback;
}

// Whether the server drafts with AI (the page's config says): if not, no button and no Alt+D.
export function assistAvailable() {
  return Boolean(state.config && state.config.assist);
}

function input() {
  return document.getElementById("ac-composer-input");
}

export function resetAssist() {
  if (state.assist && state.assist.draftId && state.assist.streaming) {
    send({ type: "assist.cancel", conversation: state.assist.conversation, draft_id: state.assist.draftId });
  }
  state.assist = null;
  renderAssist();
}

function noteMode() {
  return state.composer.mode === "note";
}

function ticketOpen() {
  const ticket = state.detail && state.detail.ticket;
  return Boolean(ticket && ticket.status !== "resolved");
}

// --- rendering ----------------------------------------------------------------------------------

export function renderComposer() {
  const form = document.getElementById("ac-composer");
  if (!form || !state.detail) return;
  const textarea = input();
  const note = noteMode();
  const replyAllowed = mayReply();
  form.classList.toggle("ac-composer--note", note);
  for (const radio of form.querySelectorAll('input[name="ac-mode"]')) radio.checked = radio.value === state.composer.mode;
  textarea.placeholder = t(note ? "composer.placeholderNote" : "composer.placeholderReply");
  if (textarea.value !== state.composer.text) textarea.value = state.composer.text;
  const hint = document.getElementById("ac-composer-hint");
  let hintText = "";
  if (note) hintText = t("message.noteHint");
  else if (!ticketOpen()) hintText = t("composer.closed");
  else if (!replyAllowed) hintText = t("composer.claimFirst");
  hint.textContent = hintText;
  hint.hidden = !hintText;
  const sendButton = document.getElementById("ac-send");
  sendButton.textContent = state.composer.sending ? t("composer.sending") : t(note ? "composer.saveNote" : "composer.send");
  sendButton.disabled = state.composer.sending || (!note && !replyAllowed);
  const assistButton = document.getElementById("ac-assist");
  if (assistButton) {
    const streaming = Boolean(state.assist && state.assist.streaming);
    assistButton.textContent = streaming ? t("assist.cancel") : t("assist.button");
    assistButton.disabled = !streaming && (!replyAllowed || note);
  }
  const error = document.getElementById("ac-composer-error");
  error.textContent = state.composer.error || "";
  error.hidden = !state.composer.error;
  renderAssist();
}

let shownAssist = { element: null, assist: null, text: null };

function renderAssist() {
  const element = document.getElementById("ac-assist-status");
  if (!element) return;
  const assist = state.assist && state.assist.conversation === state.selected ? state.assist : null;
  // The region is role=status: drawn again only for another draft or when what it says changes, or
  // screen readers would say it again on every render of the composer.
  const shown = assist ? JSON.stringify([assist.error, Boolean(assist.streaming), Boolean(assist.stale), locale()]) : "";
  if (shownAssist.element === element && shownAssist.assist === assist && shownAssist.text === shown) return;
  shownAssist = { element, assist, text: shown };
  element.replaceChildren();
  element.className = "ac-assist";
  element.hidden = !assist;
  if (!assist) return;
  if (assist.error) {
    element.classList.add("ac-assist--error");
    element.append(h("span", { testid: "assist-error", text: assist.error }));
    return;
  }
  element.append(
    h("span", { testid: "assist-state", text: assist.streaming ? t("assist.drafting") : t("assist.done") }),
  );
  if (assist.stale) {
    element.classList.add("ac-assist--stale");
    element.append(h("strong", { class: "ac-assist__stale", testid: "assist-stale", text: t("assist.stale") }));
  }
}

// --- sending ------------------------------------------------------------------------------------

async function submit() {
  const text = state.composer.text.trim();
  const conversation = state.selected;
  if (!text || !conversation || state.composer.sending) return;
  const internal = noteMode();
  if (!internal && !mayReply()) {
    state.composer.error = t("composer.claimFirst");
    renderComposer();
    return;
  }
  // The composer empties as the message goes, so that what the agent types next (while it is being
  // sent) is kept, not wiped by the answer; a message that fails to go is put back in front of it.
  const sent = state.composer.text;
  state.composer.text = "";
  state.composer.sending = true;
  state.composer.error = null;
  renderComposer();
  try {
    const message = await api.post(conversation, text, internal);
    if (state.selected !== conversation) return;
    if (state.assist && !state.assist.streaming) state.assist = null;
    // The socket's conversation.message may come first or not at all: the id keeps it once.
    showSaved({ conversation, message });
  } catch (error) {
    if (reloadIfSignedOut(error)) return;
    if (state.selected === conversation) {
      state.composer.text = state.composer.text.trim() ? `${sent}\n${state.composer.text}` : sent;
    }
    state.composer.error = t("composer.sendFailed", { detail: error.detail || t("error.unknown") });
    announce(state.composer.error, { assertive: true });
  } finally {
    state.composer.sending = false;
    if (state.selected === conversation) {
      renderComposer();
      const textarea = input();
      if (textarea) textarea.focus();
    }
  }
}

function sendTyping() {
  if (!state.selected || !state.composer.text.trim()) return;
  // Typing to the customer is only relayed for whoever may answer; a note is shown to colleagues.
  if (!noteMode() && !mayReply()) return;
  const now = Date.now();
  if (now - lastTypingSent < TYPING_INTERVAL_MS) return;
  if (send({ type: "typing", conversation: state.selected, internal: noteMode() })) lastTypingSent = now;
}

export function setMode(mode) {
  state.composer.mode = mode === "note" ? "note" : "reply";
  lastTypingSent = 0;
  renderComposer();
}

// --- canned replies -------------------------------------------------------------------------------

function loadCanned() {
  if (state.canned || cannedLoading) return cannedLoading;
  cannedLoading = api
    .cannedReplies()
    .then((data) => {
      state.canned = Array.isArray(data.canned_replies) ? data.canned_replies : [];
      state.cannedError = null;
    })
    .catch((error) => {
      reloadIfSignedOut(error);
      state.cannedError = error.detail || t("error.unknown");
    })
    .finally(() => {
      cannedLoading = null;
      updateCanned();
    });
  return cannedLoading;
}

// One reply per shortcode: the conversation's language first, then "any", then another language.
function cannedFor(query) {
  const conversationLocale = state.detail ? state.detail.conversation.locale : null;
  const rank = (reply) => (reply.locale === conversationLocale ? 0 : reply.locale === "" ? 1 : 2);
  const best = new Map();
  for (const reply of state.canned || []) {
    const shortcode = String(reply.shortcode || "");
    if (!shortcode.toLowerCase().startsWith(query.toLowerCase())) continue;
    const current = best.get(shortcode);
    if (!current || rank(reply) < rank(current)) best.set(shortcode, reply);
  }
  return [...best.values()].sort((a, b) => a.shortcode.localeCompare(b.shortcode));
}

function cannedQuery() {
  const match = /^\/([\w-]*)$/.exec(state.composer.text);
  return match ? match[1] : null;
}

function updateCanned() {
  const query = cannedQuery();
  const popup = document.getElementById("ac-canned");
  const textarea = input();
  if (!popup || !textarea) return;
  if (query === null) {
    closeCanned();
    return;
  }
  if (!state.canned && !state.cannedError) {
    loadCanned();
  }
  cannedOpen = true;
  cannedMatches = state.canned ? cannedFor(query) : [];
  cannedActive = Math.min(cannedActive, Math.max(0, cannedMatches.length - 1));
  popup.hidden = false;
  textarea.setAttribute("aria-expanded", "true");
  if (state.cannedError) {
    popup.replaceChildren(h("li", { class: "ac-canned__empty", role: "presentation", testid: "canned-error", text: t("canned.loadFailed", { detail: state.cannedError }) }));
    textarea.removeAttribute("aria-activedescendant");
    return;
  }
  if (!state.canned) {
    popup.replaceChildren(h("li", { class: "ac-canned__empty", role: "presentation", text: "…" }));
    return;
  }
  if (!cannedMatches.length) {
    popup.replaceChildren(h("li", { class: "ac-canned__empty", role: "presentation", testid: "canned-empty", text: t("canned.empty", { query }) }));
    textarea.removeAttribute("aria-activedescendant");
    return;
  }
  popup.replaceChildren(
    ...cannedMatches.map((reply, index) =>
      h(
        "li",
        {
          id: `ac-canned-${reply.id}`,
          role: "option",
          class: "ac-canned__option",
          testid: "canned-option",
          "data-shortcode": reply.shortcode,
          "aria-selected": index === cannedActive ? "true" : "false",
          onmousedown: (event) => {
            event.preventDefault();
            insertCanned(reply);
          },
        },
        h("span", { class: "ac-canned__shortcode", text: `/${reply.shortcode}` }),
        h("span", { class: "ac-canned__title", text: reply.title }),
        h("span", { class: "ac-canned__locale", text: reply.locale ? t(`locale.${reply.locale}`) : t("canned.anyLanguage") }),
        h("span", { class: "ac-canned__text", text: reply.text }),
      ),
    ),
  );
  const active = cannedMatches[cannedActive];
  if (active) textarea.setAttribute("aria-activedescendant", `ac-canned-${active.id}`);
}

function closeCanned() {
  cannedOpen = false;
  cannedActive = 0;
  const popup = document.getElementById("ac-canned");
  const textarea = input();
  if (popup) {
    popup.hidden = true;
    popup.replaceChildren();
  }
  if (textarea) {
    textarea.setAttribute("aria-expanded", "false");
    textarea.removeAttribute("aria-activedescendant");
  }
}

function insertCanned(reply) {
  state.composer.text = reply.text;
  const textarea = input();
  textarea.value = reply.text;
  closeCanned();
  textarea.focus();
  textarea.setSelectionRange(reply.text.length, reply.text.length);
  announce(t("canned.inserted", { shortcode: reply.shortcode }));
  markDraftEdited();
}

// --- agent assist -------------------------------------------------------------------------------

function requestAssist() {
  if (!state.selected || !mayReply()) {
    state.assist = { conversation: state.selected, error: t("assist.needClaim") };
    renderComposer();
    return;
  }
  if (state.assist && state.assist.streaming) {
    cancelAssist();
    return;
  }
  if (!isConnected()) {
    state.assist = { conversation: state.selected, error: t("assist.offline") };
    renderComposer();
    return;
  }
  state.composer.mode = "reply";
  state.assist = {
    conversation: state.selected,
    draftId: null,
    basedOn: null,
    text: "",
    lastSeq: -1,
    streaming: true,
    pending: true,
    stale: false,
    edited: false,
    error: null,
  };
  send({ type: "assist.request", conversation: state.selected });
  renderComposer();
  announce(t("assist.drafting"));
}

function cancelAssist() {
  const assist = state.assist;
  if (!assist) return;
  if (assist.draftId) send({ type: "assist.cancel", conversation: assist.conversation, draft_id: assist.draftId });
  assist.streaming = false;
  assist.pending = false;
  renderComposer();
}

function currentDraft(frame) {
  const assist = state.assist;
  if (!assist || frame.conversation !== assist.conversation) return null;
  if (assist.draftId && frame.draft_id !== assist.draftId) return null;
  return assist;
}

function showDraftText(assist) {
  // The agent's own edits win: once they change the draft, nothing streamed overwrites them.
  if (assist.edited || assist.conversation !== state.selected) return;
  state.composer.text = assist.text;
  const textarea = input();
  if (textarea) {
    textarea.value = assist.text;
    textarea.scrollTop = textarea.scrollHeight;
  }
}

export function onAssistFrame(frame) {
  const assist = currentDraft(frame);
  if (!assist) return;
  switch (frame.type) {
    case "assist.started":
      if (!assist.pending && assist.draftId) return;
      assist.pending = false;
      assist.draftId = frame.draft_id;
      assist.basedOn = Number.isInteger(frame.based_on_message) ? frame.based_on_message : null;
      // The draft replaces what was in the composer.
      assist.text = "";
      showDraftText(assist);
      break;
    case "assist.delta":
      if (!assist.streaming) return;
      if (Number.isInteger(frame.seq)) {
        if (frame.seq <= assist.lastSeq) return;
        assist.lastSeq = frame.seq;
      }
      assist.text += typeof frame.text === "string" ? frame.text : "";
      // Only the draft's text changes: the status region is left alone (redrawing it would have
      // screen readers say "Drafting a reply…" again with every token).
      showDraftText(assist);
      return;
    case "assist.done":
      assist.streaming = false;
      assist.pending = false;
      // Stopped by the agent: what was streamed stays, and nothing more is said.
      if (frame.cancelled) break;
      if (typeof frame.text === "string") assist.text = frame.text;
      if (frame.stale) assist.stale = true;
      showDraftText(assist);
      announce(t(assist.stale ? "assist.stale" : "assist.done"));
      break;
    case "assist.stale":
      assist.stale = true;
      announce(t("assist.stale"));
      break;
    case "assist.error":
      assist.streaming = false;
      assist.pending = false;
      assist.error = t("assist.error", { detail: assistErrorDetail(frame) });
      announce(assist.error, { assertive: true });
      break;
    default:
      return;
  }
  renderComposer();
}

// The console's own sentence for a code it knows (in the agent's language), else the server's.
function assistErrorDetail(frame) {
  const key = `assist.code.${frame.code}`;
  const known = typeof frame.code === "string" && t(key) !== key;
  return known ? t(key) : frame.detail || frame.code || t("error.unknown");
}

// The codes an assist.request may be refused with (error frames do not say which frame they answer).
const ASSIST_REQUEST_ERRORS = new Set(["unknown_type", "not_open", "not_found", "not_claimed"]);

// An `error` frame while a draft was asked for and not started, with a code that refuses one: the
// server does not draft (yet) or not here. Any other error is someone else's.
export function onSocketError(frame) {
  const assist = state.assist;
  if (assist && assist.pending && ASSIST_REQUEST_ERRORS.has(frame.code)) {
    assist.pending = false;
    assist.streaming = false;
    assist.error = t("assist.unavailable", { detail: frame.detail || frame.code });
    announce(assist.error, { assertive: true });
    renderComposer();
    return true;
  }
  return false;
}

// A newer customer message than the one the draft answers: the draft may be out of date.
export function onAssistCustomerMessage(message) {
  const assist = state.assist;
  if (!assist || assist.conversation !== state.selected || assist.error) return;
  if (assist.basedOn !== null && message.id > assist.basedOn && !assist.stale) {
    assist.stale = true;
    announce(t("assist.stale"));
    renderAssist();
  }
}

function markDraftEdited() {
  const assist = state.assist;
  if (!assist || assist.error) return;
  if (!assist.edited) {
    assist.edited = true;
    // Their edits win: stop a draft still streaming rather than write over what they type.
    if (assist.streaming) cancelAssist();
  }
}

// --- wiring -------------------------------------------------------------------------------------

export function composerElement() {
  const textarea = h("textarea", {
    id: "ac-composer-input",
    class: "ac-composer__input",
    testid: "composer-input",
    rows: "3",
    role: "combobox",
    "aria-autocomplete": "list",
    "aria-controls": "ac-canned",
    "aria-expanded": "false",
    "aria-describedby": "ac-composer-hint ac-assist-status",
    "aria-keyshortcuts": assistAvailable() ? "Enter Alt+D Alt+N" : "Enter Alt+N",
  });
  textarea.addEventListener("input", () => {
    state.composer.text = textarea.value;
    state.composer.error = null;
    markDraftEdited();
    updateCanned();
    sendTyping();
    const error = document.getElementById("ac-composer-error");
    if (error) error.hidden = true;
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return; // an input method is still composing
    if (cannedOpen) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        if (cannedMatches.length) {
          const step = event.key === "ArrowDown" ? 1 : -1;
          cannedActive = (cannedActive + step + cannedMatches.length) % cannedMatches.length;
          updateCanned();
        }
        return;
      }
      if ((event.key === "Enter" || event.key === "Tab") && !event.shiftKey && cannedMatches[cannedActive]) {
        event.preventDefault();
        insertCanned(cannedMatches[cannedActive]);
        return;
      }
      if (event.key === "Escape") {
        event.preventDefault();
        closeCanned();
        return;
      }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      submit();
    }
  });
  textarea.addEventListener("blur", () => window.setTimeout(() => {
    if (document.activeElement !== textarea) closeCanned();
  }, 100));
  const modeRadio = (value) =>
    h(
      "label",
      { class: `ac-mode ac-mode--${value}` },
      h("input", {
        type: "radio",
        name: "ac-mode",
        value,
        testid: `mode-${value}`,
        checked: state.composer.mode === value,
        onchange: () => setMode(value),
      }),
      h("span", { text: t(value === "note" ? "composer.note" : "composer.reply") }),
    );
  return h(
    "form",
    {
      id: "ac-composer",
      class: "ac-composer",
      testid: "composer",
      onsubmit: (event) => {
        event.preventDefault();
        submit();
      },
    },
    h(
      "div",
      { class: "ac-composer__bar" },
      h("fieldset", { class: "ac-modes" }, h("legend", { class: "ac-visually-hidden", text: t("composer.mode") }), modeRadio("reply"), modeRadio("note")),
      assistAvailable()
        ? h("button", {
            type: "button",
            id: "ac-assist",
            class: "ac-button ac-button--assist",
            testid: "assist-button",
            "aria-keyshortcuts": "Alt+D",
            onclick: requestAssist,
            text: t("assist.button"),
          })
        : null,
    ),
    h("label", { for: "ac-composer-input", class: "ac-visually-hidden", text: t("composer.label") }),
    h("div", { class: "ac-composer__field" }, textarea, h("ul", { id: "ac-canned", class: "ac-canned", role: "listbox", "aria-label": t("canned.label"), testid: "canned-list", hidden: true })),
    h("p", { id: "ac-composer-hint", class: "ac-composer__hint", testid: "composer-hint", hidden: true }),
    h("div", { id: "ac-assist-status", class: "ac-assist", role: "status", testid: "assist-status", hidden: true }),
    h("p", { id: "ac-composer-error", class: "ac-composer__error", role: "alert", testid: "composer-error", hidden: true }),
    h("div", { class: "ac-composer__send" }, h("button", { type: "submit", id: "ac-send", class: "ac-button ac-button--primary", testid: "send-button", text: t("composer.send") })),
  );
}

// Alt+D drafts with AI, Alt+N switches between reply and note (from anywhere in the conversation).
export function composerShortcut(event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || !state.detail) return false;
  const key = event.code === "KeyD" ? "d" : event.code === "KeyN" ? "n" : null;
  if (key === "d") {
    if (!assistAvailable()) return false;
    requestAssist();
    return true;
  }
  if (key === "n") {
    setMode(noteMode() ? "reply" : "note");
    const textarea = input();
    if (textarea) textarea.focus();
    return true;
  }
  return false;
}
