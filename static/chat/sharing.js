// Shared links, on the chat page: the share dialog (make a link to what a
// conversation shows now, copy it, show or hide your name, revoke it), the
// list of all your links, and which conversations have one (the sidebar's
// "Shared" marker). The shared page itself is share.js. Server text reaches
// the DOM through textContent only.

import { getJSON, postJSON } from './http.js';
import { $, copyText, el, timeEl } from './ui.js';

export function initSharing({ data, confirm, onChange }) {
  const info = (data && data.shares) || {};
  const shared = new Set(Array.isArray(info.conversations) ? info.conversations : []);
  const dom = {
    dialog: $('#share-dialog'),
    title: $('#share-dialog-title'),
    note: $('#share-note'),
    create: $('#share-create'),
    createButton: $('#share-create-button'),
    showName: $('#share-show-name'),
    list: $('#share-list'),
    status: $('#share-status'),
  };
  // conversation: {id, title} when the dialog shares one; null for the list of all links.
  const s = { conversation: null, shares: [], generation: 0 };

  const absolute = (share) => new URL(share.url, location.origin).href;

  function setStatus(text, kind = 'info') {
    dom.status.textContent = text;
    dom.status.dataset.kind = kind;
  }

  function syncShared() {
    const before = [...shared].sort().join();
    if (s.conversation) {
      if (s.shares.length) shared.add(s.conversation.id);
      else shared.delete(s.conversation.id);
    } else {
      shared.clear();
      for (const share of s.shares) shared.add(share.conversation);
    }
    if ([...shared].sort().join() !== before) onChange();
  }

  function rowEl(share) {
    const url = el('input', {
      type: 'text',
      className: 'share-url',
      readonly: true,
      'aria-label': 'Link',
      spellcheck: 'false',
    });
    url.value = absolute(share);
    url.addEventListener('focus', () => url.select());
    const copy = el('button', { type: 'button', className: 'ghost-button share-copy', text: 'Copy link' });
    const revoke = el('button', { type: 'button', className: 'ghost-button share-revoke danger-text', text: 'Revoke' });
    const nameBox = el('input', { type: 'checkbox', className: 'share-row-name' });
    nameBox.checked = Boolean(share.show_owner_name);
    const head = el('div', { className: 'share-row-head' }, [
      s.conversation ? null : el('a', { href: `/c/${share.conversation}/`, text: share.title || 'Untitled' }),
      el('span', {}, ['Made ', timeEl(share.created_at)]),
      el('label', { className: 'share-option' }, [nameBox, 'Show my name']),
    ]);
    const row = el('li', { className: 'share-row' }, [head, url, copy, revoke]);
    row.dataset.id = share.id;

    copy.addEventListener('click', async () => {
      const ok = await copyText(url.value, copy);
      setStatus(ok ? 'Link copied.' : 'Could not copy: select the link and copy it yourself.', ok ? 'ok' : 'error');
    });
    nameBox.addEventListener('change', async () => {
      try {
        const body = await postJSON(`/api/shares/${share.id}/update/`, { show_owner_name: nameBox.checked });
        Object.assign(share, body.share);
        setStatus(nameBox.checked ? 'The page now shows your name.' : 'The page no longer shows your name.', 'ok');
      } catch (err) {
        nameBox.checked = !nameBox.checked;
        setStatus(`Could not change it: ${err.message}`, 'error');
      }
    });
    revoke.addEventListener('click', async () => {
      const ok = await confirm(
        'Revoke this link? Anyone who opens it will be told it does not exist. Copies people already made stay theirs.',
        'Revoke',
      );
      if (!ok) return;
      try {
        await postJSON(`/api/shares/${share.id}/revoke/`, {});
        s.shares = s.shares.filter((x) => x.id !== share.id);
        render();
        syncShared();
        setStatus('Link revoked: it no longer works.', 'ok');
      } catch (err) {
        setStatus(`Could not revoke: ${err.message}`, 'error');
      }
    });
    return row;
  }

  function render() {
    if (!s.shares.length) {
      dom.list.replaceChildren(
        el('li', {
          className: 'share-empty-list',
          text: s.conversation ? 'No links to this conversation yet.' : 'You have not shared any conversation.',
        }),
      );
      return;
    }
    dom.list.replaceChildren(...s.shares.map(rowEl));
  }

  async function load() {
    const generation = ++s.generation;
    const query = s.conversation ? `?conversation=${encodeURIComponent(s.conversation.id)}` : '';
    try {
      const body = await getJSON(`/api/shares/${query}`);
      if (generation !== s.generation) return;
      s.shares = body.shares || [];
      render();
      syncShared();
    } catch (err) {
      if (generation === s.generation) setStatus(`Could not load the links: ${err.message}`, 'error');
    }
  }

  async function create() {
    const conv = s.conversation;
    if (!conv) return;
    dom.createButton.disabled = true;
    try {
      const body = await postJSON(`/api/conversations/${conv.id}/share/`, { show_owner_name: dom.showName.checked });
      s.shares.unshift(body.share);
      render();
      syncShared();
      const ok = await copyText(absolute(body.share), dom.createButton);
      setStatus(ok ? 'Link made and copied.' : 'Link made: copy it below.', 'ok');
      const url = dom.list.querySelector(`li[data-id="${body.share.id}"] .share-url`);
      if (url && !ok) url.focus();
    } catch (err) {
      setStatus(`Could not make a link: ${err.message}`, 'error');
    } finally {
      dom.createButton.disabled = false;
    }
  }

  dom.createButton.addEventListener('click', create);

  function open(conv) {
    s.conversation = conv ? { id: conv.id, title: conv.title } : null;
    s.shares = [];
    dom.list.replaceChildren();
    setStatus('');
    dom.create.hidden = !conv;
    dom.showName.checked = false;
    dom.title.textContent = conv ? `Share “${conv.title || 'Untitled'}”` : 'Your shared links';
    const who = info.public ? 'Anyone with the link' : 'Anyone with the link who can log in here';
    dom.note.textContent = conv
      ? `${who} sees this conversation as it is now (the versions shown). Messages you add later are not shared; your other conversations never are.`
      : `${who} can open these. Revoke a link to stop it working.`;
    if (!dom.dialog.open) dom.dialog.showModal();
    (conv ? dom.createButton : dom.dialog.querySelector('.dialog-buttons button')).focus();
    load();
  }

  return {
    open,
    isShared: (id) => shared.has(id),
  };
}
