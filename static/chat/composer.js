// What the user asks for: send a message, stop, regenerate, continue, edit a
// message (a new version), switch between versions, copy.

import { compareLive, compareModels, comparePickerClose, compareSettle, compareStopAll, initCompare } from './compare.js';
import { send } from './socket.js';
import { postJSON } from './http.js';
import { continueFrame, regenerateFrame, sendFrame, stopFrame } from './protocol.js';
import {
  announce,
  appendMessage,
  clearError,
  dom,
  followBottom,
  renderEarlier,
  showError,
  showMessages,
  updateControls,
} from './render.js';
import { busy, canStopAndSend, isCurrent, newClientId, state } from './state.js';
import { attachmentChipEl, copyText, el, userMessageEl } from './ui.js';
import { initAttachments, modelSeesImages, trayAttachments, trayClear, trayRestore, trayUploading } from './attachments.js';

let maxPromptChars = 32000;

export function autosize() {
  dom.prompt.style.height = 'auto';
  dom.prompt.style.height = `${Math.min(dom.prompt.scrollHeight + 2, 320)}px`;
}

/** A message that could not be sent goes back into the box, before what is there now (its files too). */
export function promptRestore(text, attachments = []) {
  const current = dom.prompt.value;
  dom.prompt.value = current.trim() ? `${text}\n\n${current}` : text;
  if (attachments.length) trayRestore(attachments);
  autosize();
  dom.prompt.focus();
}

function submit() {
  if (trayUploading()) {
    showError('Wait a moment: the files are still uploading.');
    return;
  }
  if (sendText(dom.prompt.value, { attachments: trayAttachments() })) {
    dom.prompt.value = '';
    trayClear();
    autosize();
  }
}

/** Send a user message (editOf: the id of the message it replaces as a new version).
 * While a reply streams, a message from the composer is "stop and send": the
 * server stops that reply (saved as shown) and sends this one, in one step. */
function sendText(text, { editOf = null, attachments = [] } = {}) {
  const interrupt = editOf === null && canStopAndSend();
  if ((!text.trim() && attachments.length === 0) || (busy() && !interrupt)) return false;
  if (text.length > maxPromptChars) {
    showError(`A message is limited to ${maxPromptChars.toLocaleString()} characters (this one has ${text.length.toLocaleString()}).`);
    return false;
  }
  const models = editOf ? null : compareModels();
  if (attachments.some((a) => a.kind === 'image') && !models && !modelSeesImages()) {
    const picked = state.models.find((x) => x.id === dom.model.value);
    showError(`${picked ? picked.label : 'This model'} cannot see images: pick a model marked “sees images”, or remove the images.`);
    return false;
  }
  clearError();
  // A message that failed to send was put back in the box; this replaces it.
  for (const failed of dom.messages.querySelectorAll('.message[data-role="user"][data-status="failed"]')) failed.remove();
  compareSettle(); // a compare shown in columns: the branch picked from it is shown now
  if (models) comparePickerClose();
  const clientId = newClientId();
  const frame = sendFrame({
    clientId,
    conversation: state.conversation ? state.conversation.id : null,
    text,
    model: dom.model.value || null,
    models,
    editOf,
    attachments: attachments.map((a) => a.id),
    interrupt,
  });
  if (editOf) state.refreshNext = true;
  const node = userMessageEl({ text, status: 'pending', clientId, attachments });
  state.pending.set(clientId, { frame, node, text, attachments });
  state.awaiting = clientId;
  appendMessage(node);
  updateControls();
  followBottom(true);
  send(frame); // if the socket is down, it goes out when it reconnects
  return true;
}

function regenerate(node) {
  if (busy() || !node.dataset.id) return;
  clearError();
  const clientId = newClientId();
  const frame = regenerateFrame({ clientId, reply: node.dataset.id, model: dom.model.value || null });
  state.actions.set(clientId, { kind: 'regenerate', node, frame });
  state.awaiting = clientId;
  state.refreshNext = true;
  node.dataset.replacing = 'true';
  updateControls();
  announce('Regenerating the reply');
  send(frame);
}

function continueReply(node) {
  if (busy() || !node.dataset.id) return;
  clearError();
  const id = node.dataset.id;
  state.awaiting = `continue:${id}`;
  state.refreshNext = true;
  updateControls();
  send(continueFrame({ reply: id }));
}

function startEdit(node) {
  if (busy() || !node.dataset.id || node.querySelector('.edit-form')) return;
  const bubble = node.querySelector('.bubble');
  const area = el('textarea', { className: 'edit-area', 'aria-label': 'Edit your message', rows: '3' });
  area.value = node.chatsiteText || '';
  // The message's files go with the new version; each can be left out.
  let kept = [...(node.chatsiteAttachments || [])];
  const files = el('div', { className: 'edit-attachments', 'aria-label': 'Attached files' });
  const drawFiles = () => {
    files.replaceChildren(
      ...kept.map((a) =>
        el('div', { className: 'tray-item', dataset: { status: 'ready' } }, [
          attachmentChipEl(a),
          el('button', {
            type: 'button',
            className: 'tray-remove',
            'aria-label': `Leave out ${a.name}`,
            title: 'Leave out',
            onclick: () => {
              kept = kept.filter((x) => x !== a);
              drawFiles();
              area.focus();
            },
          }),
        ]),
      ),
    );
    files.hidden = kept.length === 0;
  };
  drawFiles();
  const save = el('button', { type: 'submit', className: 'send-button edit-save', text: 'Save & send' });
  const cancel = el('button', { type: 'button', className: 'ghost-button edit-cancel', text: 'Cancel' });
  const form = el('form', { className: 'edit-form' }, [files, area, el('div', { className: 'edit-buttons' }, [cancel, save])]);
  const list = node.querySelector('.message-attachments');
  const close = () => {
    form.remove();
    bubble.hidden = !node.chatsiteText;
    if (list) list.hidden = false;
    node.querySelector('.message-actions').hidden = false;
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = area.value;
    if ((!text.trim() && kept.length === 0) || busy()) return;
    // The branch after the edited message leaves the view; the old one stays reachable by its switcher.
    let next = node.nextElementSibling;
    while (next) {
      const after = next.nextElementSibling;
      next.remove();
      next = after;
    }
    const editOf = node.dataset.id;
    node.remove();
    sendText(text, { editOf, attachments: kept });
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
  if (list) list.hidden = true;
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

export function stopReply() {
  if (state.active === null) return;
  if (compareLive().length > 0) {
    compareStopAll(); // a compare: every live column
    return;
  }
  state.stopRequested = state.active;
  send(stopFrame({ reply: state.active }));
  updateControls();
}

export function initComposer({ data }) {
  maxPromptChars = (data.limits && data.limits.max_prompt_chars) || 32000;
  initAttachments({ data });
  initCompare();
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
  dom.prompt.addEventListener('input', () => {
    if (state.active !== null) updateControls(); // Stop, or "Stop and send" once there is text
    autosize();
  });
  // The box narrows when the buttons beside it change ("Stop and send" is wider
  // than Send): its text wraps anew, so its height is measured again.
  let promptWidth = 0;
  new ResizeObserver((entries) => {
    const width = entries[entries.length - 1].contentRect.width;
    if (width !== promptWidth) {
      promptWidth = width;
      autosize();
    }
  }).observe(dom.prompt);
  dom.stop.addEventListener('click', stopReply);
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
  autosize();
}
