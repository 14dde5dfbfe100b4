/*
 * Handing the conversation to a person: the request, the waiting state (queue position, expected
 * wait, or when the team is back), the agent who joins, types, writes and leaves, and the end of
 * the ticket (resolved, with the rating asked for).
 */

import { ensureConversation } from "./api.js";
import { bridge } from "./bridge.js";
import { config } from "./config.js";
import { showCsatPrompt } from "./feedback.js";
import { t } from "./messages.js";
import { sendFrame, sendOrQueue, upsertMessage } from "./socket.js";
import { state } from "./state.js";
import { conversationKey, storage } from "./storage.js";
import { addLocalNotice, removeEntry, renderEntry, scrollToBottom } from "./transcript.js";
import { announce, showNotice, ui, updateHeader } from "./ui.js";

// The agent's typing indicator goes out this long after the last agent.typing (the server relays one
// at most every 2 s while they type: agents.events.TYPING_SHOWN_SECONDS).
export const AGENT_TYPING_SHOWN_MS = 6000;
// The customer's typing is sent at most once per this interval (the server drops the rest anyway).
export const CUSTOMER_TYPING_INTERVAL_MS = 2000;

export async function requestHandoff(reason) {
  if (state.handoff) return;
  ui.handoffButton.disabled = true;
  try {
    await ensureConversation();
  } catch (error) {
    ui.handoffButton.disabled = false;
    showNotice(t("createFailed"));
    return;
  }
  if (state.handoff) return;
  state.pendingHandoffNotice = addLocalNotice(t("handoffRequested"));
  sendOrQueue({ type: "handoff", reason });
  // Re-enabled if the server never confirms (handoff.started disables it for good).
  window.setTimeout(() => {
    if (!state.handoff) {
      ui.handoffButton.disabled = false;
      removePendingHandoffNotice();
    }
  }, 20000);
}

export function removePendingHandoffNotice() {
  if (state.pendingHandoffNotice) {
    removeEntry(state.pendingHandoffNotice);
    state.pendingHandoffNotice = null;
  }
}

// The handoff as the widget keeps it (and stores it, so that a page shown before the socket is ready
// already knows): null, or the ticket with where the customer stands and who has it.
export function setHandoff(value) {
  const appearedOrEnded = Boolean(state.handoff) !== Boolean(value);
  state.handoff = value;
  if (state.conversation) storage.set(conversationKey("handoff", state.conversation.id), value);
  if (!value || value.agentName) hideAgentTyping();
  updateHeader();
  renderHandoffStatus();
  // The "talk to a person" offer inside failed replies depends only on whether there is a handoff: a
  // queue update leaves them as they are (redrawing them would move focus and re-announce them).
  if (appearedOrEnded) for (const entry of state.entries) if (entry.status === "failed") renderEntry(entry);
}

function numberOrNull(value) {
  return Number.isFinite(value) ? value : null;
}

// The handoff fields of handoff.started and of ready's `handoff`, in the widget's names.
function handoffFromFrame(frame, previous) {
  const ticket = frame.ticket != null ? frame.ticket : frame.ticket_id;
  return {
    ticketId: ticket == null ? (previous ? previous.ticketId : null) : ticket,
    // A later handoff.started without a status (the queue moved) keeps the one the widget knows.
    status: typeof frame.status === "string" ? frame.status : previous ? previous.status : "open",
    position: numberOrNull(frame.position),
    expectedWaitMinutes: numberOrNull(frame.expected_wait_minutes),
    businessHoursOpen: frame.business_hours_open !== false,
    opensAt: typeof frame.opens_at === "string" ? frame.opens_at : null,
    timeZone: typeof frame.time_zone === "string" ? frame.time_zone : null,
    agentName: previous ? previous.agentName : null,
  };
}

// What `ready` says of the handoff is the server's word: it replaces what this browser remembered
// (a ticket resolved while the page was closed leaves no waiting state behind). A server without the
// field (undefined) leaves the remembered state as it is.
export function restoreHandoff(handoff) {
  if (handoff === undefined) return;
  if (!handoff || typeof handoff !== "object") {
    if (state.handoff) setHandoff(null);
    return;
  }
  const restored = handoffFromFrame(handoff, null);
  restored.agentName = handoff.agent && typeof handoff.agent.name === "string" ? handoff.agent.name : null;
  if (restored.agentName) restored.status = "assigned";
  setHandoff(restored);
}

export function onHandoffStarted(frame) {
  const first = !state.handoff;
  const handoff = handoffFromFrame(frame, state.handoff);
  setHandoff(handoff);
  if (state.awaiting && !state.awaiting.text) removeEntry(state.awaiting);
  removePendingHandoffNotice();
  // A second handoff.started (the queue moved, a trigger fired again) only updates the waiting state.
  if (first) {
    // The system message the handoff saved says what a reload shows; without one, the same sentence.
    if (frame.message && typeof frame.message === "object" && frame.message.role) upsertMessage(frame.message);
    else addLocalNotice(t("handoffStarted"));
    announce(waitingSentence(handoff));
  }
  bridge.emit("handoff", { ticket_id: handoff.ticketId });
}

export function onAgentJoined(frame) {
  const name = frame.agent_name || (frame.agent && frame.agent.name) || null;
  const previous = state.handoff || handoffFromFrame({}, null);
  setHandoff(Object.assign({}, previous, { status: "assigned", position: 0, expectedWaitMinutes: 0, agentName: name }));
  addLocalNotice(t("agentJoined", { name: name || t("someone") }));
  announce(t("agentJoined", { name: name || t("someone") }));
}

export function onAgentMessage(frame) {
  const message = frame.message && typeof frame.message === "object" ? frame.message : null;
  if (!message) return;
  hideAgentTyping();
  const entry = upsertMessage(Object.assign({ role: "agent" }, message, {
    agent_name: (message.agent && message.agent.name) || message.agent_name || frame.agent_name
      || (state.handoff && state.handoff.agentName) || null,
  }));
  if (entry && entry.text) announce(t("announceAgent", { name: entry.agentName || t("agentLabel"), text: entry.text }));
  bridge.noteIncoming();
}

let agentTypingTimer = null;

export function onAgentTyping(frame) {
  if (frame.internal) return;
  const name = (frame.agent && frame.agent.name) || (state.handoff && state.handoff.agentName) || null;
  // The element is a live region: rewriting the same sentence on every frame would re-announce it.
  const text = t("agentTyping", { name: name || t("someone") });
  if (ui.agentTypingText.textContent !== text) ui.agentTypingText.textContent = text;
  const wasHidden = ui.agentTyping.hidden;
  ui.agentTyping.hidden = false;
  clearTimeout(agentTypingTimer);
  agentTypingTimer = window.setTimeout(hideAgentTyping, AGENT_TYPING_SHOWN_MS);
  if (wasHidden) scrollToBottom(false);
}

export function hideAgentTyping() {
  clearTimeout(agentTypingTimer);
  agentTypingTimer = null;
  if (ui.agentTyping) ui.agentTyping.hidden = true;
}

// A status notice the server saved (what a reload shows), or the widget's own sentence without one.
function showServerNotice(frame, fallback) {
  const message = frame.message && typeof frame.message === "object" && frame.message.role ? frame.message : null;
  const entry = message ? upsertMessage(message) : addLocalNotice(fallback);
  announce(entry.text || fallback);
  return entry;
}

// The agent gave the conversation back to the assistant: it answers the next message again.
export function onAgentLeft(frame) {
  const name = (frame.agent && frame.agent.name) || (state.handoff && state.handoff.agentName) || null;
  setHandoff(null);
  showServerNotice(frame, t("agentLeft", { name: name || t("someone") }));
}

// The agent resolved the conversation: said so, and the rating asked for (unless already given).
export function onConversationResolved(frame) {
  setHandoff(null);
  showServerNotice(frame, t("conversationResolved"));
  if (frame.csat_requested && !state.csatDone) {
    if (state.csatPromptElement) state.csatPromptElement.remove();
    showCsatPrompt(false);
    ui.transcriptInner.append(state.csatPromptElement);
    scrollToBottom(true);
  }
}

// Staff closed the conversation: any waiting ends, and the notice says so (no rating asked).
export function onConversationClosed(frame) {
  setHandoff(null);
  hideAgentTyping();
  showServerNotice(frame, t("conversationClosed"));
}

let customerTypingSentAt = 0;

// While a person has (or is about to have) the conversation, they are told the customer is typing.
export function noteCustomerTyping() {
  if (!state.handoff || !ui.input.value.trim()) return;
  const now = Date.now();
  if (now - customerTypingSentAt < CUSTOMER_TYPING_INTERVAL_MS) return;
  // Not queued: a typing frame sent after a reconnect would say something no longer true.
  if (sendFrame({ type: "typing" })) customerTypingSentAt = now;
}

const clockFormats = new Map();

function clockFormat(timeZone) {
  const key = timeZone || "";
  if (!clockFormats.has(key)) {
    const options = { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" };
    try {
      clockFormats.set(key, new Intl.DateTimeFormat(config.locale, Object.assign({ timeZone: timeZone || undefined }, options)));
    } catch (error) {
      // A time zone this browser does not know: the customer's own clock, still labelled.
      clockFormats.set(key, new Intl.DateTimeFormat(config.locale, options));
    }
  }
  return clockFormats.get(key);
}

// When the team is back, in the team's time zone (the zone is named: the customer may be elsewhere).
export function teamBackText(handoff) {
  const opensAt = handoff.opensAt ? new Date(handoff.opensAt) : null;
  if (!opensAt || Number.isNaN(opensAt.getTime())) return t("teamAway");
  return t("teamBack", { when: clockFormat(handoff.timeZone).format(opensAt) });
}

// One sentence of where the customer stands: the queue and the wait, or when the team is back.
export function waitingSentence(handoff) {
  if (teamAway(handoff)) return teamBackText(handoff);
  const parts = [];
  if (handoff.position) parts.push(t("queuePosition", { position: handoff.position }));
  if (handoff.expectedWaitMinutes) parts.push(t("expectedWait", { minutes: handoff.expectedWaitMinutes }));
  return parts.length ? parts.join(t("listSeparator")) : t("subtitleWaiting");
}

// Closed only when the server said so: a handoff stored by an earlier widget has no such field.
function teamAway(handoff) {
  return handoff.businessHoursOpen === false;
}

// Waiting until a person has it: an agent who joined without a name (or a reload that finds the
// ticket assigned with no agent named) still ends the wait.
function isWaiting(handoff) {
  return Boolean(handoff) && handoff.status !== "assigned" && !handoff.agentName;
}

// The bar above the transcript while the customer waits for a person; hidden once one has joined.
export function renderHandoffStatus() {
  if (!ui.handoffStatus) return;
  const handoff = state.handoff;
  const waiting = isWaiting(handoff);
  ui.handoffStatus.hidden = !waiting;
  if (!waiting) return;
  const away = teamAway(handoff);
  ui.handoffStatus.dataset.hours = away ? "closed" : "open";
  ui.handoffStatusTitle.textContent = away ? t("waitingClosedTitle") : t("waitingTitle");
  ui.handoffStatusText.textContent = waitingSentence(handoff);
  ui.handoffStatusTicket.textContent = handoff.ticketId != null ? t("handoffTicket", { ticket: handoff.ticketId }) : "";
}
