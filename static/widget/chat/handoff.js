/*
 * Handing the conversation to a person: the request, and the frames that follow it.
 */

import { ensureConversation } from "./api.js";
import { bridge } from "./bridge.js";
import { t } from "./messages.js";
import { sendOrQueue, upsertMessage } from "./socket.js";
import { state } from "./state.js";
import { conversationKey, storage } from "./storage.js";
import { addLocalNotice, removeEntry, renderEntry } from "./transcript.js";
import { announce, showNotice, ui, updateHeader } from "./ui.js";

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

export function setHandoff(value) {
  state.handoff = value;
  if (state.conversation) storage.set(conversationKey("handoff", state.conversation.id), value);
  updateHeader();
  // Retry and "talk to a person" offers inside failed replies change with the handoff state.
  for (const entry of state.entries) if (entry.status === "failed") renderEntry(entry);
}

export function onHandoffStarted(frame) {
  const ticket = frame.ticket_id != null ? frame.ticket_id : frame.ticket;
  setHandoff({ ticketId: ticket == null ? null : ticket, agentName: state.handoff ? state.handoff.agentName : null });
  if (state.awaiting && !state.awaiting.text) removeEntry(state.awaiting);
  removePendingHandoffNotice();
  addLocalNotice(t("handoffStarted"));
  bridge.emit("handoff", { ticket_id: ticket == null ? null : ticket });
}

export function onAgentJoined(frame) {
  const name = frame.agent_name || (frame.agent && frame.agent.name) || null;
  setHandoff({ ticketId: state.handoff ? state.handoff.ticketId : null, agentName: name });
  addLocalNotice(t("agentJoined", { name: name || t("someone") }));
}

export function onAgentMessage(frame) {
  const message = frame.message && typeof frame.message === "object" ? frame.message : null;
  if (!message) return;
  const entry = upsertMessage(Object.assign({ role: "agent" }, message, {
    agent_name: message.agent_name || frame.agent_name || (state.handoff && state.handoff.agentName) || null,
  }));
  if (entry && entry.text) announce(t("announceAgent", { name: entry.agentName || t("agentLabel"), text: entry.text }));
  bridge.noteIncoming();
}
