// The chat page's DOM: the message list (a window of the shown branch, more on
// scrolling up), the streaming reply (one render per animation frame), the
// controls' enabled state, the title and the messages for people.

import { postJSON } from './http.js';
import { busy, canStopAndSend, modelLabel, replyState, replyThinking, state } from './state.js';
import {
  $,
  assistantMessageEl,
  finishAssistant,
  renderAssistant,
  renderAssistantReasoning,
  setVersions,
  userMessageEl,
} from './ui.js';

export const dom = {
  scroller: $('#scroller'),
  messages: $('#messages'),
  empty: $('#empty-state'),
  prompt: $('#prompt'),
  send: $('#send'),
  stop: $('#stop'),
  model: $('#model'),
  composer: $('#composer'),
  hint: $('#composer-hint'),
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

const RENDER_WINDOW = 50; // messages rendered at first; more on scrolling up

// --- the streaming reply: one render per animation frame ---------------------

const dirty = new Set();
let rafHandle = 0;

export function scheduleRender(r) {
  dirty.add(r);
  if (!rafHandle) rafHandle = requestAnimationFrame(flushRenders);
}

/** Forget a pending render of `r` (its final text is rendered now instead). */
export function cancelRender(r) {
  dirty.delete(r);
}

function flushRenders() {
  rafHandle = 0;
  for (const r of dirty) {
    if (r.reasoning !== '' || r.redacted) renderReplyReasoning(r, { streaming: true });
    renderAssistant(r.node, r.text, { streaming: true });
    followColumn(r.node);
  }
  dirty.clear();
  followBottom();
}

/** Show a reply's reasoning as its state has it: "Thinking…" while it thinks,
 * then "Thought for …" (`ms`: the server's figure, once the reply ended). */
export function renderReplyReasoning(r, { streaming = false, ms = null } = {}) {
  renderAssistantReasoning(r.node, {
    text: r.reasoning,
    redacted: r.redacted,
    streaming,
    thinking: streaming && replyThinking(r),
    ms: ms ?? r.thinkingMs,
    startedAt: r.thinkingSince,
  });
}

// --- the message list ---------------------------------------------------------

export function appendMessage(node) {
  dom.messages.append(node);
  updateEmptyState();
}

function updateEmptyState() {
  dom.empty.hidden = dom.messages.querySelector('.message') !== null;
}

export function followBottom(force = false) {
  if (force) state.stick = true;
  if (state.stick) dom.scroller.scrollTop = dom.scroller.scrollHeight;
  updateJump();
}

/** On a wide screen a compare column's reply scrolls in its own box (style.css):
 * it follows its stream, unless the reader scrolled that box up (compare.js). */
export function followColumn(node) {
  if (node.dataset.follow !== 'off' && node.parentElement && node.parentElement.classList.contains('compare-column')) {
    node.scrollTop = node.scrollHeight;
  }
}

function updateJump() {
  const gap = dom.scroller.scrollHeight - dom.scroller.scrollTop - dom.scroller.clientHeight;
  dom.jump.hidden = gap < 120;
}

function messageNode(m) {
  if (m.role === 'user') {
    const node = userMessageEl({ id: m.id, text: m.content, status: 'stored', createdAt: m.created_at, attachments: m.attachments || [] });
    setVersions(node, m.versions);
    return node;
  }
  const model = m.provider && m.model ? `${m.provider}/${m.model}` : m.model;
  const node = assistantMessageEl({ id: m.id, status: m.status, model, createdAt: m.created_at });
  const r = replyState(node, m.id, m.content || '', m.last_seq || 0, m.reasoning || '', m.reasoning_redacted === true);
  setVersions(node, m.versions);
  node.chatsiteSegments = m.segments || [];
  const reasoningMs = m.metrics && typeof m.metrics.reasoning_ms === 'number' ? m.metrics.reasoning_ms : null;
  if (m.status === 'streaming') {
    // Thinking since about when the reply began (this page did not see it begin).
    const began = Date.parse(m.created_at);
    r.thinkingSince = Number.isNaN(began) ? Date.now() : began;
    renderReplyReasoning(r, { streaming: true });
    renderAssistant(node, r.text, { streaming: true });
  } else {
    r.finished = true;
    r.thinkingMs = reasoningMs;
    renderReplyReasoning(r, { ms: reasoningMs });
    renderAssistant(node, r.text);
    finishAssistant(node, { ...m, model: modelLabel(m.provider, m.model) });
  }
  return node;
}

/** Render the messages of the current conversation (page load or a reload over HTTP). */
export function showMessages(messages) {
  dirty.clear();
  state.replies.clear();
  state.latestReply = null;
  state.active = null;
  state.compare = null;
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
export function renderEarlier(count = RENDER_WINDOW) {
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

/** Scroll to a message of the shown branch (rendering down to it) and highlight it briefly. */
export function revealMessage(id) {
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

/** The message the address names (#m-<id>), on another branch if need be. */
export async function revealFromHash() {
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

/** Scrolling, the jump button, and rendering earlier messages as the top comes near. */
export function initMessageList() {
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
  // Messages off screen are laid out lazily (content-visibility), so their heights
  // settle after they are first shown: stay at the bottom while that happens.
  new ResizeObserver(() => {
    if (state.stick) dom.scroller.scrollTop = dom.scroller.scrollHeight;
  }).observe(dom.messages);
  dom.loadEarlier.addEventListener('click', () => renderEarlier());
  window.addEventListener('hashchange', () => revealFromHash());
  // Observed once the page has scrolled to where it opens (else it would fire at the top).
  return { watchEarlier: () => earlierObserver.observe(dom.loadEarlier) };
}

// --- controls and words for people ----------------------------------------------

const SEND_WORDS = {
  send: { text: 'Send', label: 'Send message', title: 'Send (Enter)', hint: 'Enter to send · Shift+Enter for a new line · Esc stops a reply' },
  interrupt: {
    text: 'Stop and send',
    label: 'Stop the reply and send this message',
    title: 'Stop the reply and send (Enter)',
    hint: 'Enter stops the reply and sends · Shift+Enter for a new line · Esc only stops',
  },
};

/** Whether the composer holds something to send (text, or a file uploaded). */
const composerFilled = () =>
  dom.prompt.value.trim() !== '' || dom.composer.querySelector('.tray-item[data-status="ready"]') !== null;

export function updateControls() {
  // While a reply streams the composer stays usable: with something in it the
  // primary button is "Stop and send" (Enter too); empty, the button is Stop.
  const streaming = state.active !== null;
  const interrupt = canStopAndSend() && composerFilled();
  const mode = streaming ? 'interrupt' : 'send';
  if (dom.send.dataset.mode !== mode) {
    const words = SEND_WORDS[mode];
    dom.send.dataset.mode = mode;
    dom.send.querySelector('.button-text').textContent = words.text;
    dom.send.setAttribute('aria-label', words.label);
    dom.send.title = words.title;
    if (dom.hint) dom.hint.textContent = words.hint;
  }
  dom.send.hidden = streaming && !interrupt;
  dom.send.disabled = (busy() && !interrupt) || state.models.length === 0;
  updateMessageActions();
  dom.stop.hidden = !streaming;
  dom.stop.disabled = streaming && state.stopRequested === state.active;
  // A compare streams several replies: Stop stops them all.
  const live = [...state.replies.values()].filter((r) => !r.finished).length;
  dom.stop.querySelector('.button-text').textContent = live > 1 ? 'Stop all' : 'Stop';
  dom.stop.setAttribute('aria-label', live > 1 ? 'Stop all the replies' : 'Stop the reply');
  dom.composer.dataset.busy = busy() ? 'true' : 'false';
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
      const badge = node.querySelector('.badge');
      const moderated = Boolean(badge) && badge.dataset.errorKind === 'moderation';
      const continuable = ['stopped', 'interrupted', 'error'].includes(status) && (node.chatsiteText || '').trim() !== '' && !moderated;
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

export function showError(message) {
  dom.error.textContent = message;
  dom.error.hidden = false;
}

export function clearError() {
  dom.error.textContent = '';
  dom.error.hidden = true;
}

export function setTitle(title) {
  const text = title || 'New chat';
  dom.title.textContent = text;
  document.title = `${text} · chatsite`;
}

export function announce(text) {
  dom.announcer.textContent = '';
  // A new text node, a moment later, so the same words are announced again.
  setTimeout(() => {
    dom.announcer.textContent = text;
  }, 50);
}
