// The chat page: state, socket frames, composer. See docs/protocol.md.

import { ReconnectingSocket } from './socket.js';
import { initSettings } from './settings.js';
import { createSidebar, postJSON } from './sidebar.js';
import {
  $,
  el,
  assistantMessageEl,
  copyText,
  finishAssistant,
  firstLineTitle,
  refreshTimes,
  renderAssistant,
  reopenAssistant,
  setErrorLabels,
  setMessageId,
  setUserStatus,
  setVersions,
  userMessageEl,
} from './ui.js';

const data = JSON.parse(document.getElementById('page-data').textContent);
const MAX_PROMPT_CHARS = (data.limits && data.limits.max_prompt_chars) || 32000;
setErrorLabels(data.error_labels);

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
  loadEarlier: $('#load-earlier'),
  announcer: $('#announcer'),
  exportMenu: $('#export-menu'),
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
  messages: [], // the shown branch as loaded over HTTP (or with the page)
  firstRendered: 0, // index in state.messages of the first message in the DOM
  actions: new Map(), // client_id -> {kind: 'regenerate', node}: sent, not yet started
  refreshNext: false, // the next reply_started is for a regenerate / edit / continue
  refreshOnFinish: new Set(), // reply ids to reload the conversation after (versions, segments)
};

const RENDER_WINDOW = 50; // messages rendered at first; more on scrolling up

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

function messageNode(m) {
  if (m.role === 'user') {
    const node = userMessageEl({ id: m.id, text: m.content, status: 'stored', createdAt: m.created_at });
    setVersions(node, m.versions);
    return node;
  }
  const model = m.provider && m.model ? `${m.provider}/${m.model}` : m.model;
  const node = assistantMessageEl({ id: m.id, status: m.status, model, createdAt: m.created_at });
  const r = replyState(node, m.id, m.content || '', m.last_seq || 0);
  setVersions(node, m.versions);
  node.chatsiteSegments = m.segments || [];
  if (m.status === 'streaming') {
    renderAssistant(node, r.text, { streaming: true });
  } else {
    r.finished = true;
    renderAssistant(node, r.text);
    finishAssistant(node, { ...m, model: modelLabel(m.provider, m.model) });
  }
  return node;
}

/** Render the messages of the current conversation (page load or a reload over HTTP). */
function showMessages(messages) {
  dirty.clear();
  state.replies.clear();
  state.latestReply = null;
  state.active = null;
  state.messages = messages.filter((m) => m.role === 'user' || m.role === 'assistant');
  // Only the last RENDER_WINDOW messages go into the DOM now; earlier ones on scrolling up.
  state.firstRendered = Math.max(0, state.messages.length - RENDER_WINDOW);
  const nodes = state.messages.slice(state.firstRendered).map(messageNode);
  const last = [...state.messages].reverse().find((m) => m.role === 'assistant');
  if (last) {
    state.latestReply = last.id;
    if (last.status === 'streaming') state.active = last.id;
  }
  // Keep messages the user sent that the server has not acknowledged yet.
  for (const p of state.pending.values()) nodes.push(p.node);
  dom.messages.replaceChildren(...nodes);
  dom.loadEarlier.hidden = state.firstRendered === 0;
  updateEmptyState();
  updateControls();
}

/** Put up to `count` more earlier messages into the DOM, keeping the view where it is. */
function renderEarlier(count = RENDER_WINDOW) {
  if (state.firstRendered === 0) return;
  const from = Math.max(0, state.firstRendered - count);
  const nodes = state.messages.slice(from, state.firstRendered).map(messageNode);
  const before = dom.scroller.scrollHeight;
  const top = dom.scroller.scrollTop;
  dom.messages.prepend(...nodes);
  state.firstRendered = from;
  dom.loadEarlier.hidden = from === 0;
  dom.scroller.scrollTop = top + (dom.scroller.scrollHeight - before);
  updateControls();
}

const earlierObserver = new IntersectionObserver(
  (entries) => {
    if (!entries.some((e) => e.isIntersecting) || dom.loadEarlier.hidden) return;
    renderEarlier();
    // An observer speaks only when the intersection changes: if what was just
    // rendered still leaves the marker in range (short messages, lazily laid out),
    // it would never speak again. Observing anew reports where it is now.
    earlierObserver.unobserve(dom.loadEarlier);
    if (!dom.loadEarlier.hidden) earlierObserver.observe(dom.loadEarlier);
  },
  { root: dom.scroller, rootMargin: '600px 0px 0px 0px' },
);
// Observed once the page has scrolled to where it opens (else it would fire at the top).
const watchEarlier = () => earlierObserver.observe(dom.loadEarlier);

// Messages off screen are laid out lazily (content-visibility), so their heights
// settle after they are first shown: stay at the bottom while that happens.
new ResizeObserver(() => {
  if (state.stick) dom.scroller.scrollTop = dom.scroller.scrollHeight;
}).observe(dom.messages);
dom.loadEarlier.addEventListener('click', () => renderEarlier());

/** Scroll to a message of the shown branch (rendering down to it) and highlight it briefly. */
function revealMessage(id) {
  const index = state.messages.findIndex((m) => m.id === id);
  if (index !== -1 && index < state.firstRendered) renderEarlier(state.firstRendered - index);
  const node = document.getElementById(`m-${id}`);
  if (!node) return false;
  state.stick = false;
  node.scrollIntoView({ block: 'center' });
  node.classList.remove('highlight');
  void node.offsetWidth; // restart the animation
  node.classList.add('highlight');
  setTimeout(() => node.classList.remove('highlight'), 2500);
  if (!node.hasAttribute('tabindex')) node.setAttribute('tabindex', '-1');
  node.focus({ preventScroll: true });
  return true;
}

async function revealFromHash() {
  const m = /^#m-([0-9a-f-]{36})$/.exec(location.hash);
  if (!m || !state.conversation) return false;
  if (revealMessage(m[1])) return true;
  // Not on the shown branch: switch to the branch through it.
  try {
    const body = await postJSON(`/api/conversations/${state.conversation.id}/branch/`, { message: m[1] });
    showMessages(body.messages || []);
    return revealMessage(m[1]);
  } catch {
    return false;
  }
}
window.addEventListener('hashchange', () => revealFromHash());

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
  updateMessageActions();
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

const sidebar = createSidebar({
  getCurrentId: () => (state.conversation ? state.conversation.id : null),
  onNavigateAway: () => location.assign('/'),
});

function bumpConversation(id) {
  if (!sidebar.has(id)) {
    // Unknown here (another tab made it): ask the server for the list.
    clearTimeout(bumpConversation.timer);
    bumpConversation.timer = setTimeout(() => sidebar.reload(), 300);
    return;
  }
  sidebar.bump({ id });
}

document.addEventListener('chatsite:renamed', (event) => {
  if (state.conversation && event.detail.id === state.conversation.id) {
    state.conversation.title = event.detail.title;
    setTitle(event.detail.title);
  }
});

const settingsDialog = initSettings({ getConversation: () => state.conversation });

function updateExportMenu() {
  const conv = state.conversation;
  settingsDialog.update();
  dom.exportMenu.hidden = !conv;
  if (!conv) return;
  $('#export-md').href = `/c/${conv.id}/export.md`;
  $('#export-json').href = `/c/${conv.id}/export.json`;
}

/** Open or close the conversation drawer (narrow screens). The focus goes into it
 * when it opens, so the keyboard is where the eyes are, and back to its button
 * when it closes. */
function setSidebarOpen(open) {
  document.body.classList.toggle('sidebar-open', open);
  dom.sidebarToggle.setAttribute('aria-expanded', String(open));
  const drawer = $('#sidebar');
  if (window.matchMedia('(min-width: 48rem)').matches) return; // not a drawer here
  if (open) {
    const target = drawer.querySelector('.conversation-link.current') || drawer.querySelector('.new-chat');
    if (target) target.focus();
  } else if (drawer.contains(document.activeElement)) {
    dom.sidebarToggle.focus();
  }
}

dom.sidebarToggle.addEventListener('click', () => setSidebarOpen(!document.body.classList.contains('sidebar-open')));
dom.backdrop.addEventListener('click', () => setSidebarOpen(false));

// --- model picker -----------------------------------------------------------
// The page brings the server's last good model lists; /api/models/ is asked
// again while a provider has not been listed yet, and when the tab comes back.
// A model whose provider is unreachable stays selectable, marked with since when.

const models = {
  providers: data.model_providers || {},
  default: data.default_model || null,
  picked: null, // the id the user chose in the picker
  polls: 0,
  timer: null,
};

const providerOf = (id) => id.slice(0, Math.max(0, id.indexOf('/')));

function sinceText(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return '';
  const today = when.toDateString() === new Date().toDateString();
  const options = today ? { hour: '2-digit', minute: '2-digit' } : { dateStyle: 'medium', timeStyle: 'short' };
  return when.toLocaleString([], options);
}

function providerProblem(id) {
  const name = providerOf(id);
  const p = models.providers[name];
  if (!p || p.reachable !== false) return null;
  const since = p.unreachable_since ? ` since ${sinceText(p.unreachable_since)}` : '';
  return `${p.label || name} unreachable${since}`;
}

function modelHint() {
  const select = dom.model;
  const m = state.models.find((x) => x.id === select.value);
  const problem = m ? providerProblem(m.id) : null;
  const detail = problem ? models.providers[providerOf(m.id)].error : null;
  const text = [problem && `${problem}${detail ? `: ${detail}` : ''}.`, m && m.description].filter(Boolean).join(' ');
  select.title = text;
  select.dataset.unreachable = problem ? 'true' : 'false';
  $('#model-hint').textContent = text;
}

function renderModels() {
  const select = dom.model;
  if (state.models.length === 0) {
    const pending = Object.values(models.providers).some((p) => p.reachable === null);
    select.replaceChildren(el('option', { value: '', text: pending ? 'Loading models…' : 'No models available' }));
    select.disabled = true;
    if (!pending) showError('No model is configured on this server.');
    updateControls();
    return;
  }
  select.disabled = false;
  select.replaceChildren(
    ...state.models.map((m) => {
      const problem = providerProblem(m.id);
      return el('option', {
        value: m.id,
        title: m.description || null,
        text: `${m.label || m.id}${problem ? ` (${problem})` : ''}`,
        dataset: problem ? { unreachable: 'true' } : null,
      });
    }),
  );
  const ids = state.models.map((m) => m.id);
  const wanted = [models.picked, state.conversation && state.conversation.model, models.default, ids[0]];
  select.value = wanted.find((id) => id && ids.includes(id));
  modelHint();
  updateControls();
}

async function refreshModels() {
  clearTimeout(models.timer);
  if (document.body.dataset.socket !== 'open') {
    // The server can't be reached right now: ask once the socket is back (onOpen).
    models.deferred = true;
    return;
  }
  models.deferred = false;
  try {
    const response = await fetch('/api/models/', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    const hadNone = state.models.length === 0;
    state.models = Array.isArray(body.models) ? body.models : [];
    models.providers = body.providers || {};
    models.default = body.default || null;
    renderModels();
    if (hadNone && state.models.length > 0) clearError();
  } catch {
    // Keep what the picker shows; the next poll or visit asks again.
  }
  pollModelsWhilePending();
}

function pollModelsWhilePending() {
  const pending = Object.values(models.providers).some((p) => p.reachable === null);
  if (pending && models.polls < 30) {
    models.polls += 1;
    models.timer = setTimeout(refreshModels, 1000);
  }
}

function initModels() {
  dom.model.addEventListener('change', () => {
    models.picked = dom.model.value;
    modelHint();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') refreshModels();
  });
  renderModels();
  pollModelsWhilePending();
}

// --- sending and stopping ---------------------------------------------------

function submit() {
  if (sendText(dom.prompt.value)) {
    dom.prompt.value = '';
    autosize();
  }
}

/** Send a user message (editOf: the id of the message it replaces as a new version). */
function sendText(text, { editOf = null } = {}) {
  if (!text.trim() || busy()) return false;
  if (text.length > MAX_PROMPT_CHARS) {
    showError(`A message is limited to ${MAX_PROMPT_CHARS.toLocaleString()} characters (this one has ${text.length.toLocaleString()}).`);
    return false;
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
  if (editOf) {
    frame.edit_of = editOf;
    state.refreshNext = true;
  }
  const node = userMessageEl({ text, status: 'pending', clientId });
  state.pending.set(clientId, { frame, node, text });
  state.awaiting = clientId;
  appendMessage(node);
  updateControls();
  followBottom(true);
  socket.send(frame); // if the socket is down, it goes out when it reconnects
  return true;
}

function regenerate(node) {
  if (busy() || !node.dataset.id) return;
  clearError();
  const clientId = newClientId();
  const frame = { type: 'regenerate', client_id: clientId, reply: node.dataset.id };
  if (dom.model.value) frame.model = dom.model.value;
  state.actions.set(clientId, { kind: 'regenerate', node, frame });
  state.awaiting = clientId;
  state.refreshNext = true;
  node.dataset.replacing = 'true';
  updateControls();
  announce('Regenerating the reply');
  socket.send(frame);
}

function continueReply(node) {
  if (busy() || !node.dataset.id) return;
  clearError();
  const id = node.dataset.id;
  state.awaiting = `continue:${id}`;
  state.refreshNext = true;
  updateControls();
  socket.send({ type: 'continue', reply: id });
}

function startEdit(node) {
  if (busy() || !node.dataset.id || node.querySelector('.edit-form')) return;
  const bubble = node.querySelector('.bubble');
  const area = el('textarea', { className: 'edit-area', 'aria-label': 'Edit your message', rows: '3' });
  area.value = node.chatsiteText || '';
  const save = el('button', { type: 'submit', className: 'send-button edit-save', text: 'Save & send' });
  const cancel = el('button', { type: 'button', className: 'ghost-button edit-cancel', text: 'Cancel' });
  const form = el('form', { className: 'edit-form' }, [area, el('div', { className: 'edit-buttons' }, [cancel, save])]);
  const close = () => {
    form.remove();
    bubble.hidden = false;
    node.querySelector('.message-actions').hidden = false;
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = area.value;
    if (!text.trim() || busy()) return;
    // The branch after the edited message leaves the view; the old one stays reachable by its switcher.
    let next = node.nextElementSibling;
    while (next) {
      const after = next.nextElementSibling;
      next.remove();
      next = after;
    }
    const editOf = node.dataset.id;
    node.remove();
    sendText(text, { editOf });
  });
  cancel.addEventListener('click', () => {
    close();
    node.querySelector('.edit-message').focus();
  });
  area.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      close();
      node.querySelector('.edit-message').focus();
    } else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  bubble.hidden = true;
  node.querySelector('.message-actions').hidden = true;
  node.append(form);
  area.focus();
}

async function switchVersion(target) {
  if (busy() || !state.conversation) return;
  const id = state.conversation.id;
  try {
    const body = await postJSON(`/api/conversations/${id}/branch/`, { message: target });
    if (!isCurrent(id)) return;
    const top = dom.scroller.scrollTop;
    showMessages(body.messages || []);
    const index = state.messages.findIndex((m) => m.id === target);
    if (index !== -1 && index < state.firstRendered) renderEarlier(state.firstRendered - index);
    dom.scroller.scrollTop = top;
    const node = document.getElementById(`m-${target}`);
    if (node) {
      node.scrollIntoView({ block: 'nearest' });
      const again = node.querySelector('.version-button:not([disabled])');
      if (again) again.focus();
    }
    announce('Showing another version');
  } catch (err) {
    showError(`Could not show that version: ${err.message}`);
  }
}

/** Which buttons each rendered message offers now. */
function updateMessageActions() {
  const isBusy = busy();
  const articles = dom.messages.querySelectorAll('.message');
  const last = articles.length ? articles[articles.length - 1] : null;
  for (const node of articles) {
    const isLast = node === last;
    const stored = Boolean(node.dataset.id);
    if (node.dataset.role === 'assistant') {
      const status = node.dataset.status;
      const regen = node.querySelector('.regenerate-reply');
      const cont = node.querySelector('.continue-reply');
      regen.hidden = !(isLast && stored && status !== 'streaming');
      regen.disabled = isBusy;
      // The server's rule (services.reply_is_continuable): ended early, with text to go on from.
      const continuable = ['stopped', 'interrupted', 'error'].includes(status) && (node.chatsiteText || '').trim() !== '';
      cont.hidden = !(isLast && stored && continuable);
      cont.disabled = isBusy;
    } else {
      const edit = node.querySelector('.edit-message');
      if (edit) {
        edit.hidden = !stored || node.dataset.status !== 'stored';
        edit.disabled = isBusy;
      }
    }
    for (const b of node.querySelectorAll('.version-button')) {
      b.disabled = isBusy || !b.dataset.target;
    }
  }
}

function announce(text) {
  dom.announcer.textContent = '';
  // A new text node, a moment later, so the same words are announced again.
  setTimeout(() => {
    dom.announcer.textContent = text;
  }, 50);
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
function typingIn(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

function openHelp() {
  const dialog = $('#help-dialog');
  if (!dialog.open) dialog.showModal();
}

$('#help-button').addEventListener('click', openHelp);

document.addEventListener('keydown', (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (mod && event.shiftKey && key === 'o') {
    event.preventDefault();
    location.assign('/');
    return;
  }
  if (mod && !event.shiftKey && !event.altKey && key === 'k') {
    event.preventDefault();
    if (!window.matchMedia('(min-width: 48rem)').matches) setSidebarOpen(true);
    sidebar.focusSearch();
    return;
  }
  if (event.key === '?' && !mod && !typingIn(event.target) && !document.querySelector('dialog[open]')) {
    event.preventDefault();
    openHelp();
  }
});

document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape' || event.defaultPrevented) return;
  if (document.querySelector('dialog[open]')) return; // the dialog closes itself
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
    copyText(button.closest('.message').chatsiteText || '', button).then((ok) =>
      announce(ok ? 'Copied' : 'Could not copy'),
    );
  } else if (button.classList.contains('regenerate-reply')) {
    regenerate(button.closest('.message'));
  } else if (button.classList.contains('continue-reply')) {
    continueReply(button.closest('.message'));
  } else if (button.classList.contains('edit-message')) {
    startEdit(button.closest('.message'));
  } else if (button.classList.contains('version-button') && button.dataset.target) {
    switchVersion(button.dataset.target);
  }
});

// --- server frames ----------------------------------------------------------

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
      title: firstLineTitle(p.text),
      model: p.frame.model || null,
      updated_at: new Date().toISOString(),
    };
    state.conversation = conv;
    history.replaceState(null, '', `/c/${conv.id}/`);
    setTitle(conv.title);
    sidebar.bump(conv);
    updateExportMenu();
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
    else appendMessage(node);
    state.actions.clear();
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
  reopenAssistant(r.node);
  announce('Reply started');
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
  announce(
    { complete: 'Reply finished', stopped: 'Reply stopped', interrupted: 'Reply interrupted' }[f.status] ||
      'Reply failed',
  );
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
    finishAssistant(r.node, { ...f, model: label, segments: r.node.chatsiteSegments });
    updateControls();
  }
  followBottom();
  if (state.refreshOnFinish.delete(f.reply) && !busy()) {
    // New versions (switchers) and continued parts (metrics) come from the server.
    await reloadConversation();
  }
}

// Codes that can only answer a `send`: an error frame with one of these and no
// `ref` is taken to be about the send that is still waiting.
const SEND_ERRORS = new Set(['unknown_model', 'prompt_too_long', 'reply_running']);

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
    f = { ...f, ref };
    state.pending.delete(f.ref);
    setUserStatus(p.node, 'failed', 'Not sent');
    const current = dom.prompt.value;
    dom.prompt.value = current.trim() ? `${p.text}\n\n${current}` : p.text;
    autosize();
    if (state.awaiting === f.ref) state.awaiting = null;
    updateControls();
    dom.prompt.focus();
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
  for (const a of state.actions.values()) socket.send(a.frame);
  const conv = state.conversation;
  const retrying = conv && [...state.pending.values()].some((p) => p.frame.conversation === conv.id);
  if (conv && !retrying && (reconnect || state.active !== null)) {
    socket.send({ type: 'subscribe', conversation: conv.id, after_seq: latestSeq() });
  }
  if (state.stopRequested !== null && state.stopRequested === state.active) {
    socket.send({ type: 'stop', reply: state.stopRequested });
  }
  // A server that was away may have restarted: its model lists start again.
  if (reconnect || models.deferred) refreshModels();
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
const socket = new ReconnectingSocket(wsUrl, {
  onOpen,
  onFrame,
  onState: onSocketState,
  heartbeatMs: (Number(data.heartbeat_s) || 0) * 1000,
});

setTitle(state.conversation ? state.conversation.title : null);
initModels();
sidebar.start(Array.isArray(data.conversations) ? data.conversations : []);
updateExportMenu();
showMessages(Array.isArray(data.messages) ? data.messages : []);
autosize();
requestAnimationFrame(async () => {
  if (!(await revealFromHash())) followBottom(true);
  requestAnimationFrame(watchEarlier);
});
document.body.dataset.socket = 'connecting';
socket.connect();
// "3 min ago" becomes "4 min ago": relative times follow the clock.
setInterval(() => refreshTimes(), 30_000);
if (window.matchMedia('(min-width: 48rem)').matches) dom.prompt.focus();

// For debugging and end-to-end tests.
window.chatsite = { socket, state };
