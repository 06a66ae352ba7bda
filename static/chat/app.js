// The chat page: state, socket frames, composer. See docs/protocol.md.

import { ReconnectingSocket } from './socket.js';
import {
  $,
  el,
  assistantMessageEl,
  conversationItem,
  copyText,
  finishAssistant,
  firstLineTitle,
  renderAssistant,
  setUserStatus,
  userMessageEl,
} from './ui.js';

const data = JSON.parse(document.getElementById('page-data').textContent);
const MAX_PROMPT_CHARS = (data.limits && data.limits.max_prompt_chars) || 32000;

const dom = {
  scroller: $('#scroller'),
  messages: $('#messages'),
  empty: $('#empty-state'),
  prompt: $('#prompt'),
  send: $('#send'),
  stop: $('#stop'),
  model: $('#model'),
  composer: $('#composer'),
  error: $('#composer-error'),
  banner: $('#reconnecting'),
  title: $('#conversation-title'),
  list: $('#conversation-list'),
  jump: $('#jump-to-latest'),
  sidebarToggle: $('#sidebar-toggle'),
  backdrop: $('#sidebar-backdrop'),
};

const state = {
  conversation: data.conversation ? { ...data.conversation } : null,
  conversations: Array.isArray(data.conversations) ? data.conversations.map((c) => ({ ...c })) : [],
  models: Array.isArray(data.models) ? data.models : [],
  pending: new Map(), // client_id -> {frame, node, text}: sent, not yet acknowledged
  replies: new Map(), // reply id -> {id, node, text, seq, offsets, finished, gap}
  latestReply: null, // id of the current conversation's latest reply (null: a new one is expected)
  active: null, // id of the reply streaming in the current conversation
  awaiting: null, // client_id whose reply has not started yet
  stopRequested: null,
  stick: true, // keep the view pinned to the newest message
};

// --- helpers ----------------------------------------------------------------

function newClientId() {
  if (window.crypto && typeof crypto.randomUUID === 'function') return `c-${crypto.randomUUID()}`;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `c-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

const isCurrent = (conversationId) => state.conversation !== null && state.conversation.id === conversationId;
const busy = () => state.active !== null || state.awaiting !== null;

function modelLabel(provider, model) {
  const ids = [provider && model ? `${provider}/${model}` : null, model].filter(Boolean);
  for (const id of ids) {
    const found = state.models.find((m) => m.id === id);
    if (found) return found.label;
  }
  return model || null;
}

function replyState(node, id, text, seq) {
  const offsets = new Map([[0, 0]]);
  offsets.set(seq, text.length);
  const r = { id, node, text, seq, offsets, finished: false, gap: false };
  state.replies.set(id, r);
  return r;
}

function latestSeq() {
  const r = state.latestReply && state.replies.get(state.latestReply);
  return r ? r.seq : 0;
}

// --- rendering --------------------------------------------------------------

const dirty = new Set();
let rafHandle = 0;

function scheduleRender(r) {
  dirty.add(r);
  if (!rafHandle) rafHandle = requestAnimationFrame(flushRenders);
}

function flushRenders() {
  rafHandle = 0;
  for (const r of dirty) renderAssistant(r.node, r.text, { streaming: true });
  dirty.clear();
  followBottom();
}

function appendMessage(node) {
  dom.messages.append(node);
  updateEmptyState();
}

function updateEmptyState() {
  dom.empty.hidden = dom.messages.querySelector('.message') !== null;
}

function followBottom(force = false) {
  if (force) state.stick = true;
  if (state.stick) dom.scroller.scrollTop = dom.scroller.scrollHeight;
  updateJump();
}

function updateJump() {
  const gap = dom.scroller.scrollHeight - dom.scroller.scrollTop - dom.scroller.clientHeight;
  dom.jump.hidden = gap < 120;
}

dom.scroller.addEventListener(
  'scroll',
  () => {
    const gap = dom.scroller.scrollHeight - dom.scroller.scrollTop - dom.scroller.clientHeight;
    state.stick = gap < 80;
    updateJump();
  },
  { passive: true },
);
dom.jump.addEventListener('click', () => {
  dom.scroller.scrollTo({ top: dom.scroller.scrollHeight, behavior: 'smooth' });
  state.stick = true;
});

/** Render the messages of the current conversation (page load or a reload over HTTP). */
function showMessages(messages) {
  dirty.clear();
  state.replies.clear();
  state.latestReply = null;
  state.active = null;
  const nodes = [];
  for (const m of messages) {
    if (m.role === 'user') {
      nodes.push(userMessageEl({ id: m.id, text: m.content, status: 'stored' }));
      continue;
    }
    if (m.role !== 'assistant') continue;
    const model = m.provider && m.model ? `${m.provider}/${m.model}` : m.model;
    const node = assistantMessageEl({ id: m.id, status: m.status, model });
    const r = replyState(node, m.id, m.content || '', m.last_seq || 0);
    state.latestReply = m.id;
    if (m.status === 'streaming') {
      renderAssistant(node, r.text, { streaming: true });
      state.active = m.id;
    } else {
      r.finished = true;
      renderAssistant(node, r.text);
      finishAssistant(node, { ...m, model: modelLabel(m.provider, m.model) });
    }
    nodes.push(node);
  }
  // An earlier reply still marked streaming is not the live one.
  if (state.active !== null && state.active !== state.latestReply) state.active = null;
  // Keep messages the user sent that the server has not acknowledged yet.
  for (const p of state.pending.values()) nodes.push(p.node);
  dom.messages.replaceChildren(...nodes);
  updateEmptyState();
  updateControls();
}

async function fetchConversation(id) {
  const response = await fetch(`/api/conversations/${id}/`, {
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

/** Reload the whole conversation over HTTP and follow its live reply, if any. */
async function reloadConversation() {
  if (!state.conversation) return;
  const id = state.conversation.id;
  try {
    const body = await fetchConversation(id);
    if (!isCurrent(id)) return;
    showMessages(body.messages || []);
    followBottom();
    if (state.active) socket.send({ type: 'subscribe', conversation: id, after_seq: latestSeq() });
  } catch {
    showError('Could not reload the conversation. Reload the page to see the latest messages.');
  }
}

// --- controls ---------------------------------------------------------------

function updateControls() {
  dom.send.disabled = busy() || state.models.length === 0;
  dom.stop.hidden = state.active === null;
  dom.stop.disabled = state.active !== null && state.stopRequested === state.active;
  dom.composer.dataset.busy = busy() ? 'true' : 'false';
}

function showError(message) {
  dom.error.textContent = message;
  dom.error.hidden = false;
}

function clearError() {
  dom.error.textContent = '';
  dom.error.hidden = true;
}

function autosize() {
  dom.prompt.style.height = 'auto';
  dom.prompt.style.height = `${Math.min(dom.prompt.scrollHeight + 2, 320)}px`;
}

function setTitle(title) {
  const text = title || 'New chat';
  dom.title.textContent = text;
  document.title = `${text} · chatsite`;
}

// --- sidebar ----------------------------------------------------------------

function renderSidebar() {
  const currentId = state.conversation ? state.conversation.id : null;
  const items = state.conversations.map((c) => conversationItem(c, c.id === currentId));
  dom.list.replaceChildren(...items);
  $('#conversation-empty').hidden = items.length > 0;
}

let sidebarRefresh = null;

function bumpConversation(id) {
  const index = state.conversations.findIndex((c) => c.id === id);
  if (index === -1) {
    // Unknown here (another tab made it): ask the server for the list.
    clearTimeout(sidebarRefresh);
    sidebarRefresh = setTimeout(refreshSidebar, 300);
    return;
  }
  const [conv] = state.conversations.splice(index, 1);
  conv.updated_at = new Date().toISOString();
  state.conversations.unshift(conv);
  renderSidebar();
}

async function refreshSidebar() {
  try {
    const response = await fetch('/api/conversations/', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!response.ok) return;
    const body = await response.json();
    if (Array.isArray(body.conversations)) {
      state.conversations = body.conversations;
      renderSidebar();
    }
  } catch {
    /* the sidebar stays as it is */
  }
}

function setSidebarOpen(open) {
  document.body.classList.toggle('sidebar-open', open);
  dom.sidebarToggle.setAttribute('aria-expanded', String(open));
}

dom.sidebarToggle.addEventListener('click', () => setSidebarOpen(!document.body.classList.contains('sidebar-open')));
dom.backdrop.addEventListener('click', () => setSidebarOpen(false));

// --- model picker -----------------------------------------------------------

function initModels() {
  const select = dom.model;
  if (state.models.length === 0) {
    select.replaceChildren(el('option', { value: '', text: 'No models available' }));
    select.disabled = true;
    showError('No model is configured on this server.');
    return;
  }
  select.replaceChildren(
    ...state.models.map((m) => el('option', { value: m.id, title: m.description || null, text: m.label || m.id })),
  );
  const ids = state.models.map((m) => m.id);
  const wanted = [state.conversation && state.conversation.model, data.default_model, ids[0]];
  select.value = wanted.find((id) => id && ids.includes(id));
  const hint = () => {
    const m = state.models.find((x) => x.id === select.value);
    select.title = m && m.description ? m.description : '';
    $('#model-hint').textContent = m && m.description ? m.description : '';
  };
  select.addEventListener('change', hint);
  hint();
}

// --- sending and stopping ---------------------------------------------------

function submit() {
  const text = dom.prompt.value;
  if (!text.trim() || busy()) return;
  if (text.length > MAX_PROMPT_CHARS) {
    showError(`A message is limited to ${MAX_PROMPT_CHARS.toLocaleString()} characters (this one has ${text.length.toLocaleString()}).`);
    return;
  }
  clearError();
  // A message that failed to send was put back in the box; this replaces it.
  for (const failed of dom.messages.querySelectorAll('.message[data-role="user"][data-status="failed"]')) failed.remove();
  const clientId = newClientId();
  const frame = {
    type: 'send',
    client_id: clientId,
    conversation: state.conversation ? state.conversation.id : null,
    text,
  };
  if (dom.model.value) frame.model = dom.model.value;
  const node = userMessageEl({ text, status: 'pending', clientId });
  state.pending.set(clientId, { frame, node, text });
  state.awaiting = clientId;
  appendMessage(node);
  dom.prompt.value = '';
  autosize();
  updateControls();
  followBottom(true);
  socket.send(frame); // if the socket is down, it goes out when it reconnects
}

function stopReply() {
  if (state.active === null) return;
  state.stopRequested = state.active;
  socket.send({ type: 'stop', reply: state.active });
  updateControls();
}

dom.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  submit();
});
dom.prompt.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});
dom.prompt.addEventListener('input', autosize);
dom.stop.addEventListener('click', stopReply);
document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape' || event.defaultPrevented) return;
  if (document.body.classList.contains('sidebar-open')) {
    setSidebarOpen(false);
    return;
  }
  if (state.active !== null) {
    event.preventDefault();
    stopReply();
  }
});

dom.messages.addEventListener('click', (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  if (button.classList.contains('copy-code')) {
    const pre = button.closest('.code-block').querySelector('pre');
    copyText(pre.textContent, button);
  } else if (button.classList.contains('copy-message')) {
    copyText(button.closest('.message').chatsiteText || '', button);
  }
});

// --- server frames ----------------------------------------------------------

function onAck(f) {
  const p = state.pending.get(f.client_id);
  if (!p) return;
  state.pending.delete(f.client_id);
  p.node.dataset.id = f.message;
  setUserStatus(p.node, 'stored');
  if (p.frame.conversation === null && !isCurrent(f.conversation)) {
    const conv = {
      id: f.conversation,
      title: firstLineTitle(p.text),
      model: p.frame.model || null,
      updated_at: new Date().toISOString(),
    };
    state.conversation = conv;
    history.replaceState(null, '', `/c/${conv.id}/`);
    setTitle(conv.title);
    state.conversations = [conv, ...state.conversations.filter((c) => c.id !== conv.id)];
    renderSidebar();
  } else {
    bumpConversation(f.conversation);
  }
  if (state.awaiting === f.client_id) state.latestReply = null; // its reply comes next
}

function onReplyStarted(f) {
  if (!isCurrent(f.conversation)) {
    bumpConversation(f.conversation);
    return;
  }
  let r = state.replies.get(f.reply);
  if (!r) {
    const node = assistantMessageEl({ id: f.reply, status: 'streaming', model: f.model });
    r = replyState(node, f.reply, '', 0);
    appendMessage(node);
  } else if (f.after_seq < r.seq) {
    // The server replays from after_seq: drop what it will send again.
    if (r.offsets.has(f.after_seq)) {
      r.text = r.text.slice(0, r.offsets.get(f.after_seq));
      r.seq = f.after_seq;
    } else {
      r.gap = true;
    }
  }
  if (f.after_seq > r.seq) r.gap = true; // text in between is missing here; refetched at the end
  r.finished = false;
  r.node.dataset.status = 'streaming';
  r.node.setAttribute('aria-busy', 'true');
  if (f.model) r.node.dataset.model = f.model;
  state.active = f.reply;
  state.latestReply = f.reply;
  state.awaiting = null;
  updateControls();
  scheduleRender(r);
  followBottom();
}

function onDelta(f) {
  const r = state.replies.get(f.reply);
  if (!r || r.finished || typeof f.seq !== 'number' || f.seq <= r.seq) return;
  r.text += f.text;
  r.seq = f.seq;
  r.offsets.set(f.seq, r.text.length);
  scheduleRender(r);
}

async function onReplyFinished(f) {
  if (!isCurrent(f.conversation)) {
    bumpConversation(f.conversation);
    return;
  }
  const r = state.replies.get(f.reply);
  if (state.active === f.reply) state.active = null;
  if (state.stopRequested === f.reply) state.stopRequested = null;
  if (!r) {
    // A reply this page never saw start (e.g. it ran while the socket was down).
    state.awaiting = null;
    updateControls();
    await reloadConversation();
    return;
  }
  dirty.delete(r);
  r.finished = true;
  if (f.last_seq < r.seq) {
    // Saved is exactly deltas 1…last_seq (e.g. the server died after its last
    // checkpoint): show that, not the text past it, which a reload would lose.
    if (r.offsets.has(f.last_seq)) {
      r.text = r.text.slice(0, r.offsets.get(f.last_seq));
      r.seq = f.last_seq;
    } else {
      r.gap = true; // refetched below
    }
  }
  const label = modelLabel(null, r.node.dataset.model);
  if (f.last_seq > r.seq || r.gap) {
    renderAssistant(r.node, r.text);
    finishAssistant(r.node, { ...f, model: label });
    updateControls();
    try {
      const body = await fetchConversation(f.conversation);
      const m = (body.messages || []).find((x) => x.id === f.reply);
      if (m) {
        r.text = m.content || '';
        r.seq = m.last_seq || f.last_seq;
        r.gap = false;
        renderAssistant(r.node, r.text);
        finishAssistant(r.node, { ...f, model: label });
      }
    } catch {
      showError('Part of the reply could not be loaded. Reload the page to see all of it.');
    }
  } else {
    renderAssistant(r.node, r.text);
    finishAssistant(r.node, { ...f, model: label });
    updateControls();
  }
  followBottom();
}

// Codes that can only answer a `send`: an error frame with one of these and no
// `ref` is taken to be about the send that is still waiting.
const SEND_ERRORS = new Set(['unknown_model', 'prompt_too_long', 'reply_running']);

function onError(f) {
  showError(f.message || `Error: ${f.code}`);
  let ref = f.ref;
  if (!ref && SEND_ERRORS.has(f.code) && state.awaiting !== null && state.pending.has(state.awaiting)) {
    ref = state.awaiting;
  }
  const p = ref ? state.pending.get(ref) : null;
  if (p) {
    f = { ...f, ref };
    state.pending.delete(f.ref);
    setUserStatus(p.node, 'failed', 'Not sent');
    const current = dom.prompt.value;
    dom.prompt.value = current.trim() ? `${p.text}\n\n${current}` : p.text;
    autosize();
    if (state.awaiting === f.ref) state.awaiting = null;
    updateControls();
    dom.prompt.focus();
    // Another tab may be streaming in this conversation: show and follow it.
    if (f.code === 'reply_running' && p.frame.conversation && isCurrent(p.frame.conversation)) reloadConversation();
    return;
  }
  if (f.ref && f.ref === state.stopRequested) {
    state.stopRequested = null;
    updateControls();
  }
}

function onFrame(f) {
  switch (f.type) {
    case 'ack':
      onAck(f);
      break;
    case 'reply_started':
      onReplyStarted(f);
      break;
    case 'delta':
      onDelta(f);
      break;
    case 'reply_finished':
      onReplyFinished(f);
      break;
    case 'error':
      onError(f);
      break;
    default:
      break;
  }
}

function onOpen({ reconnect }) {
  // Sends that were never acknowledged go out again with the same client_id;
  // the server stores each client_id once, so a retry never duplicates.
  for (const p of state.pending.values()) socket.send(p.frame);
  const conv = state.conversation;
  const retrying = conv && [...state.pending.values()].some((p) => p.frame.conversation === conv.id);
  if (conv && !retrying && (reconnect || state.active !== null)) {
    socket.send({ type: 'subscribe', conversation: conv.id, after_seq: latestSeq() });
  }
  if (state.stopRequested !== null && state.stopRequested === state.active) {
    socket.send({ type: 'stop', reply: state.stopRequested });
  }
}

let everConnected = false;
function onSocketState(s) {
  document.body.dataset.socket = s;
  if (s === 'open') everConnected = true;
  // No banner for the first connection attempt; afterwards, until open again.
  dom.banner.hidden = s === 'open' || (!everConnected && s === 'connecting');
}

// --- start ------------------------------------------------------------------

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${data.ws_path || '/ws/chat/'}`;
const socket = new ReconnectingSocket(wsUrl, { onOpen, onFrame, onState: onSocketState });

setTitle(state.conversation ? state.conversation.title : null);
initModels();
renderSidebar();
showMessages(Array.isArray(data.messages) ? data.messages : []);
autosize();
requestAnimationFrame(() => followBottom(true));
document.body.dataset.socket = 'connecting';
socket.connect();
if (window.matchMedia('(min-width: 48rem)').matches) dom.prompt.focus();

// For debugging and end-to-end tests.
window.chatsite = { socket, state };
