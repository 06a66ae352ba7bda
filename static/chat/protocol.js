// The socket's frames as the page sends them (docs/protocol.md): one builder
// per client frame. What the page does with each server frame is receive.js.

/** Error codes that can only answer a `send`: an error frame with one of these
 * and no `ref` is taken to be about the send that is still waiting. */
export const SEND_ERRORS = new Set(['unknown_model', 'prompt_too_long', 'reply_running']);

/** The socket's URL on this page's host. */
export function socketUrl(path) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path || '/ws/chat/'}`;
}

/** A user message (conversation null: a new conversation; editOf: the message it is a new version of;
 * models: a compare's 2–4 model ids instead of one; interrupt: stop and send, the conversation's
 * running replies are stopped first, in the same step). */
export function sendFrame({ clientId, conversation, text, model = null, models = null, editOf = null, attachments = [], interrupt = false }) {
  const frame = { type: 'send', client_id: clientId, conversation, text };
  // A compare names its 2–4 models instead of one (docs/protocol.md, "Compare").
  if (models) frame.models = models;
  else if (model) frame.model = model;
  if (editOf) frame.edit_of = editOf;
  if (attachments.length) frame.attachments = attachments;
  if (interrupt) frame.interrupt = true;
  return frame;
}

export function regenerateFrame({ clientId, reply, model = null }) {
  const frame = { type: 'regenerate', client_id: clientId, reply };
  if (model) frame.model = model;
  return frame;
}

export const continueFrame = ({ reply }) => ({ type: 'continue', reply });
export const stopFrame = ({ reply }) => ({ type: 'stop', reply });
/** after: {reply id: seq} for a compare's columns (each resumes from its own), else null. */
export function subscribeFrame({ conversation, afterSeq, after = null }) {
  const frame = { type: 'subscribe', conversation, after_seq: afterSeq };
  if (after) frame.after = after;
  return frame;
}
