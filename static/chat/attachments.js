// Files in the composer: attached by the button, by pasting or by dropping,
// each uploaded at once (POST /api/attachments/, docs/protocol.md "Attachments")
// and shown as a chip (a thumbnail for an image) until the message is sent;
// the send frame then names their ids. The server checks every file from its
// content; this module only shows what it answered.

import { postForm, postJSON } from './http.js';
import { dom, showError, clearError, updateControls } from './render.js';
import { state } from './state.js';
import { $, attachmentChipEl, el } from './ui.js';

const tray = {
  items: [], // {key, name, status: 'uploading'|'ready', attachment}
  node: null,
  note: null,
  maxFiles: 10,
  maxBytes: 20 * 1024 * 1024,
};
let nextKey = 1;

/** Whether the chosen model takes images (GET /api/models/'s `vision`). */
export function modelSeesImages(id = dom.model.value) {
  const m = state.models.find((x) => x.id === id);
  return Boolean(m && m.vision);
}

/** The uploaded attachments, in order (what a send names). */
export function trayAttachments() {
  return tray.items.filter((i) => i.status === 'ready').map((i) => i.attachment);
}

export function trayUploading() {
  return tray.items.some((i) => i.status === 'uploading');
}

/** After a send: the chips leave the composer (the files now belong to the message). */
export function trayClear() {
  tray.items = [];
  render();
}

/** A send that was refused: its files come back into the composer, before those there now. */
export function trayRestore(attachments) {
  const known = new Set(tray.items.filter((i) => i.attachment).map((i) => i.attachment.id));
  const back = (attachments || []).filter((a) => !known.has(a.id)).map((a) => ({ key: nextKey++, name: a.name, status: 'ready', attachment: a }));
  tray.items = [...back, ...tray.items];
  render();
}

function remove(item) {
  tray.items = tray.items.filter((i) => i !== item);
  render();
  dom.prompt.focus();
  // Not sent yet: the server can forget it (a file that is on a message is kept).
  if (item.attachment && item.status === 'ready') {
    postJSON(`/api/attachments/${item.attachment.id}/delete/`, {}).catch(() => {});
  }
}

/** The note under the composer: images the chosen model cannot see. */
export function updateVisionNote() {
  if (!tray.note) return;
  const images = tray.items.some((i) => i.attachment && i.attachment.kind === 'image');
  const blind = images && !modelSeesImages();
  const picked = state.models.find((x) => x.id === dom.model.value);
  tray.note.textContent = blind
    ? `${picked ? picked.label : 'This model'} cannot see images: pick a model marked “sees images”, or remove the images.`
    : '';
  tray.note.hidden = !blind;
  tray.node.dataset.blind = blind ? 'true' : 'false';
  const button = $('#attach');
  if (button) button.title = modelSeesImages() ? 'Attach images, text files or PDFs' : 'Attach text files or PDFs (this model cannot see images)';
}

function render() {
  if (!tray.node) return;
  const chips = tray.items.map((item) => {
    const chip = item.attachment
      ? attachmentChipEl(item.attachment)
      : el('span', { className: 'attachment-chip file-chip' }, [el('span', { className: 'file-icon', 'aria-hidden': 'true' }), el('span', { className: 'file-name', text: item.name })]);
    chip.dataset.status = item.status;
    const wrap = el('div', { className: 'tray-item', dataset: { status: item.status } }, [
      chip,
      item.status === 'uploading' ? el('span', { className: 'tray-progress', text: 'Uploading…' }) : null,
      el('button', {
        type: 'button',
        className: 'tray-remove',
        'aria-label': `Remove ${item.name}`,
        title: 'Remove',
        onclick: () => remove(item),
      }),
    ]);
    return wrap;
  });
  tray.node.replaceChildren(...chips);
  tray.node.hidden = chips.length === 0;
  updateVisionNote();
  updateControls();
}

async function upload(file) {
  const item = { key: nextKey++, name: file.name || 'pasted file', status: 'uploading', attachment: null };
  tray.items.push(item);
  render();
  try {
    const form = new FormData();
    form.append('file', file, file.name || 'pasted');
    const body = await postForm('/api/attachments/', form);
    if (!tray.items.includes(item)) {
      // Removed while it uploaded.
      postJSON(`/api/attachments/${body.attachment.id}/delete/`, {}).catch(() => {});
      return;
    }
    item.attachment = body.attachment;
    item.name = body.attachment.name;
    item.status = 'ready';
  } catch (err) {
    tray.items = tray.items.filter((i) => i !== item);
    showError(`Could not attach ${item.name}: ${err.message}`);
  }
  render();
}

/** Attach these files (a FileList or an array), within the count limit. */
export function attachFiles(files) {
  const list = [...files];
  if (list.length === 0) return;
  clearError();
  const room = tray.maxFiles - tray.items.length;
  if (list.length > room) {
    showError(`At most ${tray.maxFiles} files can be attached to one message.`);
  }
  for (const file of list.slice(0, Math.max(0, room))) {
    if (tray.maxBytes && file.size > tray.maxBytes) {
      showError(`${file.name} is too large: files of up to ${Math.round(tray.maxBytes / (1024 * 1024))} MB can be attached.`);
      continue;
    }
    upload(file);
  }
}

function dragHasFiles(event) {
  return event.dataTransfer && [...event.dataTransfer.types].includes('Files');
}

export function initAttachments({ data }) {
  tray.node = $('#attachment-tray');
  tray.note = $('#attach-note');
  const limits = data.limits || {};
  if (limits.attachments_per_message) tray.maxFiles = limits.attachments_per_message;
  if (limits.attachment_max_bytes !== undefined) tray.maxBytes = limits.attachment_max_bytes;
  const input = $('#attach-input');
  $('#attach').addEventListener('click', () => input.click());
  input.addEventListener('change', () => {
    attachFiles(input.files);
    input.value = '';
  });
  dom.prompt.addEventListener('paste', (event) => {
    const files = event.clipboardData ? [...event.clipboardData.files] : [];
    if (files.length === 0) return; // text: pasted as usual
    event.preventDefault();
    attachFiles(files);
  });
  // Drop anywhere on the conversation's side of the page.
  const zone = $('main.chat');
  let depth = 0;
  zone.addEventListener('dragenter', (event) => {
    if (!dragHasFiles(event)) return;
    depth += 1;
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove('dragging');
  });
  zone.addEventListener('dragover', (event) => {
    if (!dragHasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('drop', (event) => {
    depth = 0;
    zone.classList.remove('dragging');
    if (!dragHasFiles(event)) return;
    event.preventDefault();
    attachFiles(event.dataTransfer.files);
    dom.prompt.focus();
  });
  dom.model.addEventListener('change', updateVisionNote);
  render();
}
