// What the page does with each server frame (docs/protocol.md), and what it
// sends again when the socket opens. receiveFrame is the one place received
// frames are dispatched.

import { compareAdopt, compareLive, compareResumePoints, compareShow, compareUpdate } from './compare.js';
import { promptRestore } from './composer.js';
import { send } from './socket.js';
import { getJSON } from './http.js';
import { modelsDeferred, modelsRefresh } from './models.js';
import { SEND_ERRORS, stopFrame, subscribeFrame } from './protocol.js';
import { thoughtForText } from './reasoning.js';
import {
  announce,
  appendMessage,
  cancelRender,
  followBottom,
  renderReplyReasoning,
  scheduleRender,
  setTitle,
  showError,
  showMessages,
  updateControls,
} from './render.js';
import {
  busy,
  isCurrent,
  latestSeq,
  modelLabel,
  replyAppend,
  replyAppendReasoning,
  replyRewind,
  replyState,
  state,
} from './state.js';
import {
  assistantMessageEl,
  finishAssistant,
  autoTitle,
  renderAssistant,
  reopenAssistant,
  setMessageId,
  setUserStatus,
  showQueuePlace,
} from './ui.js';

let sidebar = null;
let conversationShown = () => {};

/** sidebar: the conversation list; onConversation: the page now shows a conversation it made. */
export function initReceive({ sidebar: list, onConversation }) {
  sidebar = list;
  conversationShown = onConversation;
}

const fetchConversation = (id) => getJSON(`/api/conversations/${id}/`);

/** Reload the whole conversation over HTTP and follow its live reply, if any. */
export async function reloadConversation() {
  if (!state.conversation) return;
  const id = state.conversation.id;
  try {
    const body = await fetchConversation(id);
    if (!isCurrent(id)) return;
    showMessages(body.messages || []);
    followBottom();
    if (state.active) subscribe(id);
  } catch {
    showError('Could not reload the conversation. Reload the page to see the latest messages.');
  }
}

/** The node of a shown reply that has `replyId` among its versions (a compare's sibling), or null. */
function siblingNode(replyId) {
  for (const r of state.replies.values()) {
    if (r.id !== replyId && Array.isArray(r.node.chatsiteVersions) && r.node.chatsiteVersions.includes(replyId)) return r.node;
  }
  return null;
}

/** The latest reply has versions: it may be a compare's column, whose siblings may stream. */
function latestHasVersions() {
  const r = state.latestReply && state.replies.get(state.latestReply);
  return Boolean(r && Array.isArray(r.node.chatsiteVersions) && r.node.chatsiteVersions.length > 1);
}

/** Follow the conversation's live replies, each from the seq the page has of it
 * (a compare's columns: `after`, where a column the page lacks starts from 0). */
function subscribe(conversation) {
  let after = compareResumePoints();
  if (after === null && latestHasVersions()) after = { [state.latestReply]: latestSeq() };
  send(subscribeFrame({ conversation, afterSeq: latestSeq(), after }));
}

let bumpTimer = 0;

function bumpConversation(id) {
  if (!sidebar.has(id)) {
    // Unknown here (another tab made it): ask the server for the list.
    clearTimeout(bumpTimer);
    bumpTimer = setTimeout(() => sidebar.reload(), 300);
    return;
  }
  sidebar.bump({ id });
}

function onAck(f) {
  const action = state.actions.get(f.client_id);
  if (action) {
    bumpConversation(f.conversation);
    return;
  }
  const p = state.pending.get(f.client_id);
  if (!p) return;
  state.pending.delete(f.client_id);
  setMessageId(p.node, f.message);
  setUserStatus(p.node, 'stored');
  if (p.frame.conversation === null && !isCurrent(f.conversation)) {
    const conv = {
      id: f.conversation,
      title: autoTitle(p.text.trim() ? p.text : (p.attachments || []).map((a) => a.name).join(', ')),
      model: p.frame.model || null,
      updated_at: new Date().toISOString(),
    };
    state.conversation = conv;
    history.replaceState(null, '', `/c/${conv.id}/`);
    setTitle(conv.title);
    sidebar.bump(conv);
    conversationShown(conv);
  } else {
    bumpConversation(f.conversation);
  }
  if (state.awaiting === f.client_id) state.latestReply = null; // its reply comes next
  if (Array.isArray(f.replies) && f.replies.length > 1) {
    // A compare: a column per reply, in the order of its models.
    const models = p.frame.models || [];
    const nodes = f.replies.map((id, i) => {
      const node = assistantMessageEl({ id, status: 'streaming', model: models[i] || null });
      replyState(node, id, '', 0);
      return node;
    });
    compareShow(nodes);
  }
}

function onReplyStarted(f) {
  if (!isCurrent(f.conversation)) {
    bumpConversation(f.conversation);
    return;
  }
  if (state.refreshNext) {
    state.refreshNext = false;
    state.refreshOnFinish.add(f.reply);
  }
  let r = state.replies.get(f.reply);
  if (!r) {
    const node = assistantMessageEl({ id: f.reply, status: 'streaming', model: f.model });
    r = replyState(node, f.reply, '', 0);
    // A regenerated reply streams in place of the one it replaces.
    const action = [...state.actions.values()].find((a) => a.kind === 'regenerate' && a.node.isConnected);
    if (action) action.node.replaceWith(node);
    else if (!compareAdopt(node, siblingNode(f.reply))) appendMessage(node);
    state.actions.clear();
  } else if (f.after_seq < r.seq) {
    // The server replays from after_seq: drop what it will send again.
    replyRewind(r, f.after_seq);
  }
  if (f.after_seq > r.seq) r.gap = true; // text in between is missing here; refetched at the end
  r.finished = false;
  reopenAssistant(r.node);
  showQueuePlace(r.node, null); // a reply_queued follows if it still waits
  announce('Reply started');
  if (f.model) r.node.dataset.model = f.model;
  state.active = f.reply;
  state.latestReply = f.reply;
  state.awaiting = null;
  compareUpdate();
  updateControls();
  scheduleRender(r);
  followBottom();
}

function onReplyQueued(f) {
  const r = state.replies.get(f.reply);
  if (!r || r.finished) return;
  showQueuePlace(r.node, f.position, f.ahead);
  if (f.position === 0) announce('The model is writing the reply');
}

function onDelta(f) {
  const r = state.replies.get(f.reply);
  if (r && replyAppend(r, f)) {
    if (r.thinkingMs === null && r.thinkingSince !== null) {
      // The answer begins: the thinking is over.
      r.thinkingMs = Date.now() - r.thinkingSince;
      announce(thoughtForText(r.thinkingMs));
    }
    scheduleRender(r);
  }
}

function onReasoningDelta(f) {
  const r = state.replies.get(f.reply);
  if (!r || !replyAppendReasoning(r, f)) return;
  if (r.thinkingSince === null && r.text === '') {
    r.thinkingSince = Date.now();
    announce('Thinking');
  }
  scheduleRender(r);
}

async function onReplyFinished(f) {
  if (!isCurrent(f.conversation)) {
    bumpConversation(f.conversation);
    return;
  }
  const r = state.replies.get(f.reply);
  // A compare's other columns may stream on.
  if (state.active === f.reply) state.active = compareLive().find((id) => id !== f.reply) || null;
  if (state.stopRequested === f.reply) state.stopRequested = null;
  if (!r && siblingNode(f.reply) && state.active === null && state.awaiting === null) {
    return; // the end of another version of a shown reply (a compare that ended): nothing to show
  }
  if (!r) {
    // A reply this page never saw start (e.g. it ran while the socket was down).
    state.awaiting = null;
    updateControls();
    await reloadConversation();
    return;
  }
  cancelRender(r);
  r.finished = true;
  showQueuePlace(r.node, null);
  announce(
    { complete: 'Reply finished', stopped: 'Reply stopped', interrupted: 'Reply interrupted' }[f.status] ||
      'Reply failed',
  );
  // Saved is exactly deltas 1…last_seq (e.g. the server died after its last
  // checkpoint): show that, not the text past it, which a reload would lose.
  if (f.last_seq < r.seq) replyRewind(r, f.last_seq); // a gap, if unknown here: refetched below
  const label = modelLabel(null, r.node.dataset.model);
  renderReplyReasoning(r, { ms: f.metrics.reasoning_ms });
  if (f.last_seq > r.seq || r.gap) {
    renderAssistant(r.node, r.text);
    finishAssistant(r.node, { ...f, model: label });
    compareUpdate();
    updateControls();
    try {
      const body = await fetchConversation(f.conversation);
      const m = (body.messages || []).find((x) => x.id === f.reply);
      if (m) {
        r.text = m.content || '';
        r.reasoning = m.reasoning || '';
        r.redacted = m.reasoning_redacted === true;
        r.seq = m.last_seq || f.last_seq;
        r.gap = false;
        renderReplyReasoning(r, { ms: f.metrics.reasoning_ms });
        renderAssistant(r.node, r.text);
        finishAssistant(r.node, { ...f, model: label });
      }
    } catch {
      showError('Part of the reply could not be loaded. Reload the page to see all of it.');
    }
  } else {
    renderAssistant(r.node, r.text);
    finishAssistant(r.node, { ...f, model: label, segments: r.node.chatsiteSegments });
    compareUpdate();
    updateControls();
  }
  followBottom();
  if (state.refreshOnFinish.delete(f.reply) && !busy()) {
    // New versions (switchers) and continued parts (metrics) come from the server.
    await reloadConversation();
  }
}

function onError(f) {
  showError(f.message || `Error: ${f.code}`);
  const action = f.ref ? state.actions.get(f.ref) : null;
  if (action || (state.awaiting && state.awaiting.startsWith('continue:') && (!f.ref || state.awaiting === `continue:${f.ref}`))) {
    // A regenerate or continue that was refused: nothing changed.
    if (action) {
      delete action.node.dataset.replacing;
      state.actions.delete(f.ref);
    }
    state.awaiting = null;
    state.refreshNext = false;
    updateControls();
    return;
  }
  let ref = f.ref;
  if (!ref && SEND_ERRORS.has(f.code) && state.awaiting !== null && state.pending.has(state.awaiting)) {
    ref = state.awaiting;
  }
  const p = ref ? state.pending.get(ref) : null;
  if (p) {
    state.pending.delete(ref);
    setUserStatus(p.node, 'failed', 'Not sent');
    if (state.awaiting === ref) state.awaiting = null;
    promptRestore(p.text, p.attachments || []);
    updateControls();
    if (p.frame.edit_of) {
      state.refreshNext = false;
      reloadConversation(); // the branch that left the view comes back
      return;
    }
    // Another tab may be streaming in this conversation: show and follow it.
    if (f.code === 'reply_running' && p.frame.conversation && isCurrent(p.frame.conversation)) reloadConversation();
    return;
  }
  if (f.ref && f.ref === state.stopRequested) {
    state.stopRequested = null;
    updateControls();
  }
}

/** A conversation's new title (its model made one, or the user renamed it in
 * another tab; every tab of the user gets it):
 * the sidebar and, if it is the one shown, the header. Text only. */
function onConversationUpdated(f) {
  if (!sidebar.retitle(f.conversation, f.title)) {
    // Not listed here (made in another tab, or further down the list): the list
    // comes again from the server, with the title.
    clearTimeout(bumpTimer);
    bumpTimer = setTimeout(() => sidebar.reload(), 300);
  }
  if (isCurrent(f.conversation)) {
    state.conversation.title = f.title;
    setTitle(f.title);
  }
}

const HANDLERS = {
  conversation_updated: onConversationUpdated,
  ack: onAck,
  reply_started: onReplyStarted,
  reply_queued: onReplyQueued,
  delta: onDelta,
  reasoning_delta: onReasoningDelta,
  reply_finished: onReplyFinished,
  error: onError,
};

/** Every frame the socket receives comes here; a kind the page does not act on is ignored. */
export function receiveFrame(frame) {
  const handler = Object.hasOwn(HANDLERS, frame.type) ? HANDLERS[frame.type] : null;
  if (handler) handler(frame);
}

/** The socket opened (first time or again): send what is still unanswered, follow the live reply. */
export function socketOpened({ reconnect }) {
  // Sends that were never acknowledged go out again with the same client_id;
  // the server stores each client_id once, so a retry never duplicates.
  for (const p of state.pending.values()) send(p.frame);
  for (const a of state.actions.values()) send(a.frame);
  const conv = state.conversation;
  const retrying = conv && [...state.pending.values()].some((p) => p.frame.conversation === conv.id);
  if (conv && !retrying && (reconnect || state.active !== null || latestHasVersions())) subscribe(conv.id);
  if (state.stopRequested !== null && state.stopRequested === state.active) {
    send(stopFrame({ reply: state.stopRequested }));
  }
  if (state.compare && state.compare.stopping) {
    for (const id of compareLive()) if (state.compare.stopping.has(id)) send(stopFrame({ reply: id }));
  }
  // A server that was away may have restarted: its model lists start again.
  if (reconnect || modelsDeferred()) modelsRefresh();
}
