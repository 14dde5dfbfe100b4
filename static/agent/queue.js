/*
 * The left column: the Waiting / Mine / All tabs with their counts, and the list of conversations,
 * oldest first, each with its trigger, language, last message and how long it has waited (ticking).
 * Live from queue.updated; the unread count goes into the page title.
 */

import { api, reloadIfSignedOut } from "./api.js";
import { announce, h, parseDate, preview } from "./dom.js";
import { isMine, saveSeen, state } from "./state.js";
import { formatDuration, t } from "./strings.js";

let onOpen = () => {};
let allRefetch = null;
// The All tab's list is older than the last queue.updated: read again when the tab is next shown.
let allStale = true;

export function setQueueOpener(callback) {
  onOpen = callback;
}

export function tabs() {
  return state.supervisor ? ["waiting", "mine", "all"] : ["waiting", "mine"];
}

// What queue.updated says (the waiting list and the agent's own, with counts).
export function onQueueUpdated(frame) {
  const before = new Set(state.queues.waiting.map((item) => item.id));
  const firstLoad = !state.queueLoaded;
  state.queues.waiting = Array.isArray(frame.conversations) ? frame.conversations : [];
  state.queues.mine = Array.isArray(frame.mine) ? frame.mine : [];
  state.counts.waiting = frame.counts && Number.isInteger(frame.counts.waiting) ? frame.counts.waiting : state.queues.waiting.length;
  state.counts.mine = frame.counts && Number.isInteger(frame.counts.mine) ? frame.counts.mine : state.queues.mine.length;
  state.queueLoaded = true;
  if (!firstLoad) {
    for (const item of state.queues.waiting) {
      if (!before.has(item.id)) {
        const text = item.last_message ? preview(item.last_message.text, 60) : triggerLabel(item.ticket);
        announce(t("queue.newWaiting", { preview: text }));
      }
    }
  }
  if (state.supervisor) {
    // Read only while someone looks at it (and once at the start, for its count): every change of
    // any queue would otherwise cost a read. Its count is the one of the last read meanwhile.
    if (state.tab === "all" || firstLoad) refetchAll();
    else allStale = true;
  }
  renderQueue();
}

// The All tab is not in queue.updated: a supervisor's console reads it again (at most one at a time).
function refetchAll() {
  if (allRefetch) {
    allRefetch.again = true;
    return;
  }
  allRefetch = { again: false };
  allStale = false;
  api
    .queue("all")
    .then((data) => {
      state.queues.all = data.conversations || [];
      state.counts.all = state.queues.all.length;
      renderQueue();
    })
    .catch((error) => {
      allStale = true;
      reloadIfSignedOut(error);
    })
    .finally(() => {
      const again = allRefetch.again;
      allRefetch = null;
      if (again) refetchAll();
    });
}

export function triggerLabel(ticket) {
  if (!ticket) return "";
  const key = `trigger.${ticket.trigger}`;
  const label = t(key);
  return label === key ? String(ticket.trigger || "") : label;
}

function isUnread(item) {
  const last = item.last_message;
  if (!last || last.role === "agent") return false;
  if (item.id === state.selected && document.visibilityState === "visible") return false;
  return !(state.seen[item.id] >= last.id);
}

export function unreadCount() {
  const ids = new Set();
  for (const item of [...state.queues.waiting, ...state.queues.mine]) if (isUnread(item)) ids.add(item.id);
  return ids.size;
}

export function updateTitle() {
  const count = unreadCount();
  document.title = count ? t("app.titleUnread", { count }) : t("app.title");
}

// The agent read the conversation on screen as far as its last message.
export function markSeen(conversationId, messageId) {
  if (!conversationId || !Number.isInteger(messageId)) return;
  if (document.visibilityState !== "visible") return;
  if (state.seen[conversationId] >= messageId) return;
  state.seen[conversationId] = messageId;
  saveSeen();
  renderQueue();
}

function itemElement(item, index, activeIndex) {
  const ticket = item.ticket || {};
  const since = parseDate(item.waiting_since);
  const last = item.last_message;
  const unread = isUnread(item);
  const assignee = ticket.assignee && !isMine(ticket) ? t("queue.assignee", { name: ticket.assignee.name }) : null;
  const labelParts = [
    triggerLabel(ticket),
    ticket.reason,
    t(`locale.${item.locale}`),
    since ? t("queue.waited", { time: formatDuration((Date.now() - since.getTime()) / 1000) }) : null,
    last ? preview(last.text, 80) || t("queue.photo") : t("queue.noMessage"),
  ];
  const button = h(
    "button",
    {
      type: "button",
      class: "ac-item" + (item.id === state.selected ? " ac-item--selected" : "") + (unread ? " ac-item--unread" : ""),
      testid: "queue-item",
      "data-conversation": item.id,
      "data-index": index,
      "aria-current": item.id === state.selected ? "true" : null,
      tabindex: index === activeIndex ? "0" : "-1",
      onclick: () => onOpen(item.id),
      onfocus: () => {
        focusedIndex = index;
      },
    },
    h(
      "span",
      { class: "ac-item__top" },
      h("span", { class: "ac-item__trigger", testid: "queue-item-trigger", text: triggerLabel(ticket) }),
      h("span", { class: "ac-item__locale", testid: "queue-item-locale", text: item.locale === "zh-Hans" ? "中文" : "EN" }),
      unread ? h("span", { class: "ac-item__unread", testid: "queue-item-unread", text: t("queue.unread") }) : null,
      h("span", {
        class: "ac-item__waited",
        testid: "queue-item-waited",
        "data-since": since ? since.toISOString() : null,
        text: since ? formatDuration((Date.now() - since.getTime()) / 1000) : "",
      }),
    ),
    ticket.reason ? h("span", { class: "ac-item__reason", testid: "queue-item-reason", text: ticket.reason }) : null,
    h("span", {
      class: "ac-item__last" + (last ? "" : " ac-item__last--none"),
      testid: "queue-item-last",
      text: last ? preview(last.text, 120) || t("queue.photo") : t("queue.noMessage"),
    }),
    assignee ? h("span", { class: "ac-item__assignee", text: assignee }) : null,
  );
  button.setAttribute("aria-label", labelParts.filter(Boolean).join(" · "));
  return h("li", { class: "ac-queue__row" }, button);
}

let focusedIndex = 0;

export function renderQueue() {
  const tabList = document.getElementById("ac-tabs");
  const list = document.getElementById("ac-queue-list");
  if (!tabList || !list) return;
  tabList.replaceChildren(
    ...tabs().map((name) =>
      h(
        "button",
        {
          type: "button",
          role: "tab",
          id: `ac-tab-${name}`,
          class: "ac-tab",
          testid: `queue-tab-${name}`,
          "aria-selected": name === state.tab ? "true" : "false",
          "aria-controls": "ac-queue-list",
          tabindex: name === state.tab ? "0" : "-1",
          onclick: () => selectTab(name),
        },
        h("span", { text: t(`queue.${name}`) }),
        h("span", { class: "ac-tab__count", testid: `queue-count-${name}`, text: String(state.counts[name] || 0) }),
      ),
    ),
  );
  const items = state.queues[state.tab] || [];
  const hadFocus = list.contains(document.activeElement);
  const focusedId = hadFocus ? document.activeElement.dataset.conversation : null;
  list.setAttribute("aria-labelledby", `ac-tab-${state.tab}`);
  if (!items.length) {
    list.replaceChildren(
      h("li", { class: "ac-queue__empty", testid: "queue-empty", text: state.queueLoaded ? t(`queue.empty.${state.tab}`) : t("connection.connecting") }),
    );
    updateTitle();
    return;
  }
  let activeIndex = items.findIndex((item) => item.id === focusedId);
  if (activeIndex < 0) activeIndex = items.findIndex((item) => item.id === state.selected);
  if (activeIndex < 0) activeIndex = Math.min(focusedIndex, items.length - 1);
  list.replaceChildren(...items.map((item, index) => itemElement(item, index, activeIndex)));
  if (hadFocus) {
    const target = list.querySelector(`[data-index="${activeIndex}"]`);
    if (target) target.focus();
  }
  updateTitle();
}

export function selectTab(name, { focus = true } = {}) {
  if (!tabs().includes(name)) return;
  state.tab = name;
  focusedIndex = 0;
  if (name === "all" && allStale) refetchAll();
  renderQueue();
  if (focus) {
    const tab = document.getElementById(`ac-tab-${name}`);
    if (tab) tab.focus();
  }
}

// Arrow keys and j / k move in the list (roving tabindex), Home / End jump; the tabs take ← →.
export function wireQueueKeys() {
  const list = document.getElementById("ac-queue-list");
  const tabList = document.getElementById("ac-tabs");
  list.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const buttons = Array.from(list.querySelectorAll(".ac-item"));
    const index = buttons.indexOf(document.activeElement);
    if (index < 0) return;
    let next = null;
    if (event.key === "ArrowDown" || event.key === "j") next = Math.min(buttons.length - 1, index + 1);
    else if (event.key === "ArrowUp" || event.key === "k") next = Math.max(0, index - 1);
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = buttons.length - 1;
    if (next === null) return;
    event.preventDefault();
    buttons.forEach((button, position) => button.setAttribute("tabindex", position === next ? "0" : "-1"));
    focusedIndex = next;
    buttons[next].focus();
  });
  tabList.addEventListener("keydown", (event) => {
    const names = tabs();
    const index = names.indexOf(state.tab);
    let next = null;
    if (event.key === "ArrowRight") next = (index + 1) % names.length;
    else if (event.key === "ArrowLeft") next = (index - 1 + names.length) % names.length;
    if (next === null) return;
    event.preventDefault();
    selectTab(names[next]);
  });
}

// Every second: the waited times in the list and the header move on without a re-render.
export function tickClocks() {
  const now = Date.now();
  for (const element of document.querySelectorAll("[data-since]")) {
    const since = Date.parse(element.dataset.since);
    if (Number.isNaN(since)) continue;
    element.textContent = formatDuration((now - since) / 1000);
  }
}
