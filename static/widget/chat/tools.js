/*
 * The business tools a reply calls (tool.started, tool.finished): one status line per call in the
 * reply's bubble, a spinner while it runs, then a quiet done mark or a note that it did not work.
 * A line spins only while its reply streams: however the reply ends, or when the socket comes back
 * (a tool.finished may have been missed meanwhile), no spinner is left turning.
 */

import { h, icon } from "./dom.js";
import { strings, t } from "./messages.js";
import { replyEntryFor } from "./socket.js";
import { armReplyTimer, findReply, renderEntry, scrollToBottom, updateStopButton } from "./transcript.js";

// The summary comes from the tool's arguments: shown as text only, and never at any length.
const SUMMARY_MAX_LENGTH = 240;

// Outcomes that are no failure of the tool (the customer said no to a change): no note.
const QUIET_OUTCOMES = new Set(["declined", "cancelled", "canceled", "rejected"]);

export function onToolStarted(frame) {
  const callId = frame.call_id == null ? "" : String(frame.call_id);
  if (!callId) return;
  const entry = replyEntryFor(frame.reply_id);
  // A reply already finished here gets no new line (the server sends none after reply.done).
  if (entry.status === "complete" || entry.status === "cancelled") return;
  if (entry.status !== "streaming") {
    // A tool starting after a local timeout shows the reply is alive after all, as a delta does.
    entry.status = "streaming";
    entry.error = null;
  }
  const summary = typeof frame.summary === "string" && frame.summary.trim()
    ? frame.summary.trim().slice(0, SUMMARY_MAX_LENGTH)
    : t("toolWorking");
  const existing = entry.toolCalls.find((call) => call.callId === callId);
  if (existing) {
    existing.summary = summary;
  } else {
    entry.toolCalls.push({ callId, name: typeof frame.name === "string" ? frame.name : "", summary, state: "running", outcome: null });
  }
  // A tool call is the reply at work: its wait is not a silent reply.
  armReplyTimer(entry);
  renderEntry(entry);
  updateStopButton();
  scrollToBottom(false);
}

export function onToolFinished(frame) {
  const callId = frame.call_id == null ? "" : String(frame.call_id);
  const entry = callId ? findReply(frame.reply_id) : null;
  const call = entry && entry.toolCalls ? entry.toolCalls.find((known) => known.callId === callId) : null;
  // A call whose start this page never saw (it came while the socket was away) has no line to end.
  if (!call) return;
  const outcome = typeof frame.outcome === "string" ? frame.outcome : "error";
  call.outcome = outcome;
  call.state = outcome === "ok" ? "ok" : QUIET_OUTCOMES.has(outcome) ? "ended" : "failed";
  if (entry.status === "streaming") armReplyTimer(entry);
  renderEntry(entry);
  scrollToBottom(false);
}

// The calls a reply keeps once the socket is back or the reply is over: the finished ones.
export function settledToolCalls(entry) {
  return entry && Array.isArray(entry.toolCalls) ? entry.toolCalls.filter((call) => call.state !== "running") : [];
}

export function hasRunningToolCall(entry) {
  return entry.status === "streaming" && entry.toolCalls.some((call) => call.state === "running");
}

// The list of calls, or null when there is none to show. The list element is kept for the entry's
// life, and each line for its call's, so that the aria-live region hears changes, not a new region.
export function renderToolCalls(entry) {
  const shown = entry.status === "streaming" ? entry.toolCalls : settledToolCalls(entry);
  if (!shown.length) return null;
  if (!entry.toolListElement) {
    entry.toolListElement = h("ul", {
      class: "cs-tools", testid: "tool-calls", role: "status", "aria-live": "polite", "aria-atomic": "false",
      "aria-label": t("toolCallsLabel"),
    });
    entry.toolLineElements = new Map();
  }
  const lines = shown.map((call) => renderToolLine(entry, call));
  entry.toolListElement.replaceChildren(...lines);
  return entry.toolListElement;
}

function renderToolLine(entry, call) {
  let line = entry.toolLineElements.get(call.callId);
  if (!line) {
    line = h("li", { class: "cs-tool", testid: "tool-call", "data-call-id": call.callId });
    entry.toolLineElements.set(call.callId, line);
  }
  // Redrawn only when its state or words change: an unchanged line is not read out again.
  const signature = `${call.state}\u0000${call.summary}\u0000${call.outcome || ""}`;
  if (line.dataset.signature === signature) return line;
  line.dataset.signature = signature;
  line.dataset.state = call.state;
  line.dataset.outcome = call.outcome || "";
  const children = [];
  if (call.state === "running") {
    children.push(h("span", { class: "cs-tool__icon", "aria-hidden": "true" }, h("span", { class: "cs-spinner cs-tool__spinner" })),
      h("span", { class: "cs-tool__text", testid: "tool-call-text", text: call.summary }));
  } else {
    const finished = withoutEllipsis(call.summary);
    const mark = call.state === "ok" ? icon("check") : call.state === "failed" ? icon("alert") : icon("minus");
    children.push(h("span", { class: "cs-tool__icon", "aria-hidden": "true" }, mark),
      h("span", { class: "cs-tool__body" },
        call.state === "ok" ? h("span", { class: "cs-visually-hidden", text: t("toolDone") }) : null,
        h("span", { class: "cs-tool__text", testid: "tool-call-text", text: finished }),
        call.state === "failed"
          ? h("span", { class: "cs-tool__note", testid: "tool-call-note", text: toolFailureText(call.outcome) })
          : null));
  }
  line.replaceChildren(...children);
  return line;
}

export function toolFailureText(outcome) {
  return strings.toolFailures[outcome] || t("toolFailures.error");
}

// "Looking up: order 1234…" once it is over reads "Looking up: order 1234": nothing is pending.
export function withoutEllipsis(text) {
  return text.replace(/\s*(?:…|\.{3}|。。。)+\s*$/u, "");
}
