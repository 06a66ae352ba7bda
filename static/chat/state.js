// What the page knows, without the DOM: the conversation, the replies and
// their text by sequence number, what was sent and not yet answered.
// Render code reads it; the frame handlers (receive.js) and the composer change it.

export const state = {
  conversation: null,
  models: [],
  pending: new Map(), // client_id -> {frame, node, text}: sent, not yet acknowledged
  replies: new Map(), // reply id -> {id, node, text, seq, offsets, finished, gap, reasoning, ...}
  latestReply: null, // id of the current conversation's latest reply (null: a new one is expected)
  active: null, // id of the reply streaming in the current conversation
  awaiting: null, // client_id whose reply has not started yet
  stopRequested: null,
  stick: true, // keep the view pinned to the newest message
  messages: [], // the shown branch as loaded over HTTP (or with the page)
  firstRendered: 0, // index in state.messages of the first message in the DOM
  actions: new Map(), // client_id -> {kind: 'regenerate', node, frame}: sent, not yet started
  refreshNext: false, // the next reply_started is for a regenerate / edit / continue
  refreshOnFinish: new Set(), // reply ids to reload the conversation after (versions, segments)
  compare: null, // the compare shown in columns: {group, stopping?, chosen?} (compare.js)
  compareChosen: null, // the branch "Continue with this one" picked, shown at the next send
};

/** Fill the state from the page's embedded data (page load). */
export function stateLoad({ data }) {
  state.conversation = data.conversation ? { ...data.conversation } : null;
  state.models = Array.isArray(data.models) ? data.models : [];
}

export function newClientId() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') return `c-${crypto.randomUUID()}`;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `c-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

export const isCurrent = (conversationId) => state.conversation !== null && state.conversation.id === conversationId;
export const busy = () => state.active !== null || state.awaiting !== null;
/** A reply streams and nothing else is on its way: a send now is "stop and send". */
export const canStopAndSend = () => state.active !== null && state.awaiting === null && state.conversation !== null;

/** The label of a model as the picker lists it (the raw name if it is not listed). */
export function modelLabel(provider, model) {
  const ids = [provider && model ? `${provider}/${model}` : null, model].filter(Boolean);
  for (const id of ids) {
    const found = state.models.find((m) => m.id === id);
    if (found) return found.label;
  }
  return model || null;
}

/** A reply's state: its text so far and where each delta ended in it; its
 * reasoning likewise (both kinds of delta share one seq), and when it thought. */
export function replyState(node, id, text, seq, reasoning = '', redacted = false) {
  const offsets = new Map([[0, 0]]);
  offsets.set(seq, text.length);
  const reasoningOffsets = new Map([[0, 0]]);
  reasoningOffsets.set(seq, reasoning.length);
  const r = {
    id,
    node,
    text,
    seq,
    offsets,
    finished: false,
    gap: false,
    reasoning,
    redacted,
    reasoningOffsets,
    thinkingSince: null, // Date.now() when reasoning began here (null: not seen begin)
    thinkingMs: null, // how long it thought, once the answer began
  };
  state.replies.set(id, r);
  return r;
}

/** The reply is thinking now: it has reasoning and no answer yet, and is streaming. */
export const replyThinking = (r) => !r.finished && r.text === '' && (r.reasoning !== '' || r.redacted);

/** The seq of the current conversation's latest reply (where a subscribe resumes). */
export function latestSeq() {
  const r = state.latestReply && state.replies.get(state.latestReply);
  return r ? r.seq : 0;
}

/** Add a delta; false when it is not the next one (a duplicate, or for a finished reply). */
export function replyAppend(r, { seq, text }) {
  if (r.finished || typeof seq !== 'number' || seq <= r.seq) return false;
  r.text += text;
  r.seq = seq;
  r.offsets.set(seq, r.text.length);
  r.reasoningOffsets.set(seq, r.reasoning.length);
  return true;
}

/** Add a reasoning delta (the same rules as replyAppend, in the same seq). */
export function replyAppendReasoning(r, { seq, text, redacted }) {
  if (r.finished || typeof seq !== 'number' || seq <= r.seq) return false;
  r.reasoning += text;
  r.redacted = r.redacted || redacted === true;
  r.seq = seq;
  r.offsets.set(seq, r.text.length);
  r.reasoningOffsets.set(seq, r.reasoning.length);
  return true;
}

/** Cut the text back to exactly deltas 1…seq; where that point is unknown here, mark a gap. */
export function replyRewind(r, seq) {
  if (r.offsets.has(seq) && r.reasoningOffsets.has(seq)) {
    r.text = r.text.slice(0, r.offsets.get(seq));
    r.reasoning = r.reasoning.slice(0, r.reasoningOffsets.get(seq));
    r.seq = seq;
  } else {
    r.gap = true;
  }
}
