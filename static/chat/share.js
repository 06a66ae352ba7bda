// The shared page (/s/<token>/): a read-only snapshot of a conversation,
// rendered with the chat's own message elements and the same sanitizer
// (markdown.js, through ui.js). The snapshot arrives as JSON data in the page
// (json_script), never as HTML; model text reaches the DOM only through
// markdown.js's sanitized fragments, and user text through textContent.

import {
  $,
  assistantMessageEl,
  copyText,
  el,
  formatBytes,
  finishAssistant,
  refreshTimes,
  renderAssistant,
  renderAssistantReasoning,
  setErrorLabels,
  userMessageEl,
} from './ui.js';

const data = JSON.parse(document.getElementById('share-data').textContent);
setErrorLabels(data.error_labels);

// What the chat page offers and a snapshot cannot do.
const CHAT_ONLY = '.edit-message, .regenerate-reply, .continue-reply, .versions-slot';

function messageNode(m) {
  if (m.role === 'user') {
    const node = userMessageEl({ text: String(m.content ?? ''), createdAt: m.created_at });
    for (const extra of node.querySelectorAll(CHAT_ONLY)) extra.remove();
    const files = Array.isArray(m.attachments) ? m.attachments : [];
    if (files.length > 0) {
      // The files themselves stay their owner's: only their names are shared.
      node.querySelector('.bubble, .content')?.before(
        el('div', { className: 'message-attachments', role: 'list', 'aria-label': 'Attached files (not shared)' }, files.map((a) =>
          el('span', { className: 'attachment-chip file-chip', role: 'listitem', title: `${a.name} (not shared)`, dataset: { kind: a.kind } }, [
            el('span', { className: 'file-icon', 'aria-hidden': 'true', dataset: { kind: a.kind } }),
            el('span', { className: 'file-text' }, [
              el('span', { className: 'file-name', text: String(a.name ?? '') }),
              el('span', { className: 'file-detail', text: `not shared · ${formatBytes(Number(a.size) || 0)}` }),
            ]),
          ]),
        )),
      );
    }
    return node;
  }
  const model = m.provider && m.model ? `${m.provider}/${m.model}` : m.model || null;
  const node = assistantMessageEl({ status: m.partial ? 'stopped' : m.status, model, createdAt: m.created_at });
  for (const extra of node.querySelectorAll(CHAT_ONLY)) extra.remove();
  if (m.reasoning || m.reasoning_redacted === true) {
    const ms = m.metrics && typeof m.metrics.reasoning_ms === 'number' ? m.metrics.reasoning_ms : null;
    renderAssistantReasoning(node, { text: String(m.reasoning ?? ''), redacted: m.reasoning_redacted === true, ms });
  }
  renderAssistant(node, String(m.content ?? ''));
  finishAssistant(node, { ...m, status: m.partial ? 'partial' : m.status, model });
  if (m.partial) {
    // Still streaming when the link was made: the text saved up to then.
    const badge = node.querySelector('.badge');
    badge.textContent = 'Unfinished when shared';
    badge.dataset.kind = 'interrupted';
    badge.hidden = false;
  }
  return node;
}

const messages = (Array.isArray(data.messages) ? data.messages : []).filter(
  (m) => m && (m.role === 'user' || m.role === 'assistant'),
);
$('#messages').replaceChildren(...messages.map(messageNode));
$('#share-empty').hidden = messages.length > 0;

// The snapshot's time in the reader's own time zone (the server wrote UTC).
const when = document.querySelector('.share-meta time');
if (when) {
  const moment = new Date(when.dateTime);
  if (!Number.isNaN(moment.getTime())) {
    when.textContent = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(moment);
  }
}

function announce(text) {
  const announcer = $('#announcer');
  announcer.textContent = '';
  setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

$('#messages').addEventListener('click', (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  if (button.classList.contains('copy-code')) {
    copyText(button.closest('.code-block').querySelector('pre').textContent, button);
  } else if (button.classList.contains('copy-message')) {
    copyText(button.closest('.message').chatsiteText || '', button).then((ok) =>
      announce(ok ? 'Copied' : 'Could not copy'),
    );
  }
});

// Continue as a copy. Posted from here rather than by the form itself: the page's
// no-referrer policy would send the form's POST with "Origin: null", which the
// server's CSRF check refuses; this request names its origin (same-origin policy:
// the link goes to this server only).
const form = document.querySelector('form.share-continue');
if (form) {
  const button = form.querySelector('button[type=submit]');
  const note = form.querySelector('.share-foot-note');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    let body = null;
    let response = null;
    try {
      response = await fetch(form.action, {
        method: 'POST',
        body: new FormData(form),
        credentials: 'same-origin',
        referrerPolicy: 'same-origin',
        headers: { Accept: 'application/json' },
      });
      body = await response.json();
    } catch {
      body = null;
    }
    if (response && response.ok && body && typeof body.url === 'string' && body.url.startsWith('/c/')) {
      location.assign(body.url);
      return;
    }
    button.disabled = false;
    note.textContent =
      response && response.status === 404
        ? 'This link no longer works: it was revoked. Ask for a new one.'
        : `Could not make your copy: ${(body && body.message) || 'the server could not be reached'}. Try again.`;
    note.dataset.kind = 'error';
    announce(note.textContent);
  });
}

setInterval(() => refreshTimes(), 30_000);
document.body.dataset.ready = 'true';
