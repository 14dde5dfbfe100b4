/*
 * Who the host page says its signed-in customer is (embed.js's data-customer-id and
 * data-customer-hash, sent with host.hello), and whose conversation the widget may show.
 *
 * A conversation opened for a verified customer remembers their id (customer_id, beside its token):
 * on the next page it is opened again only if that page names the same customer. A page signed in
 * as someone else, or as nobody, starts a new conversation instead of showing another customer's
 * history (a shared computer, a sign-out); so does an anonymous conversation on a page that now
 * names a customer, whose new conversation is then verified.
 */

import { config, framed } from "./config.js";
import { renderHandoffStatus } from "./handoff.js";
import { connect, disconnect, resetConversationState } from "./socket.js";
import { loadConversationState, state } from "./state.js";
import { forgetConversation } from "./storage.js";
import { renderAll } from "./transcript.js";
import { updateHeader } from "./ui.js";

// embed.js answers widget.ready at once; a page that never says hello (one not in
// WIDGET_ALLOWED_ORIGINS, whose messages are ignored) names no customer.
const HOST_HELLO_WAIT_MS = 3000;
const CUSTOMER_ID_MAX_LENGTH = 128;

export const identity = {
  // {id, hash} from the host page, or null: sent when a conversation is created.
  customer: null,
};

let heldConversation = null;
let waitTimer = null;
let settle = null;
const settled = new Promise((resolve) => {
  settle = resolve;
});

export function customerIdOf(conversation) {
  return conversation && typeof conversation.customer_id === "string" ? conversation.customer_id : null;
}

// Resolves once the page has said who its customer is (or was given the time to): a conversation
// is created only then, so that it is verified when the page meant it to be.
export function customerSettled() {
  return settled;
}

// At start, before anything of the stored conversation is shown: a verified one waits for the host
// page's hello. The full chat page, or a frame that is not embed.js's, has no host to name anyone.
export function holdVerifiedConversation() {
  if (customerIdOf(state.conversation) !== null) {
    heldConversation = state.conversation;
    state.conversation = null;
  }
  if (framed && config.embedded) waitTimer = window.setTimeout(() => settleCustomer(null), HOST_HELLO_WAIT_MS);
  else settleCustomer(null);
}

// What host.hello carried as `customer`, checked for shape only (the server checks the hash): an
// id without a hash is passed on, for the server to refuse with its reason.
export function cleanCustomer(value) {
  if (!value || typeof value !== "object") return null;
  const id = typeof value.id === "number" && Number.isInteger(value.id) ? String(value.id) : value.id;
  if (typeof id !== "string" || !id || id.length > CUSTOMER_ID_MAX_LENGTH) return null;
  return { id, hash: typeof value.hash === "string" ? value.hash : "" };
}

export function settleCustomer(customer) {
  clearTimeout(waitTimer);
  identity.customer = customer;
  settle();
  const pageCustomerId = customer ? customer.id : null;
  if (heldConversation) {
    const conversation = heldConversation;
    heldConversation = null;
    if (customerIdOf(conversation) === pageCustomerId) {
      state.conversation = conversation;
      loadConversationState();
      renderHandoffStatus();
      updateHeader();
      connect();
    } else {
      // Never shown: its token is dropped here, its history stays with the platform.
      forgetConversation(conversation);
    }
    return;
  }
  if (state.conversation && customerIdOf(state.conversation) !== pageCustomerId) startOver();
}

// As "New conversation" does, without offering to rate the one left: it was not this customer's.
function startOver() {
  const old = state.conversation;
  disconnect();
  forgetConversation(old);
  resetConversationState();
  state.previousConversation = null;
  renderAll();
  updateHeader();
}
