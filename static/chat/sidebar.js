// The sidebar: the conversation list (grouped by date, loaded page by page),
// per-conversation actions, the archive view, search, export and import.
// Server text reaches the DOM through textContent only.

import { csrfToken, getJSON, postJSON } from './http.js';
import { $, el, timeEl } from './ui.js';
import { showUsage } from './usage.js';

const GROUP_LABELS = {
  pinned: 'Pinned',
  today: 'Today',
  yesterday: 'Yesterday',
  last_7_days: 'Previous 7 days',
  older: 'Older',
};
const GROUP_ORDER = Object.keys(GROUP_LABELS);
const tzOffset = () => -new Date().getTimezoneOffset();

/** The group a conversation falls in, by the local date of its last activity. */
export function groupOf(conv) {
  if (conv.pinned) return 'pinned';
  const when = new Date(conv.updated_at);
  if (Number.isNaN(when.getTime())) return 'older';
  const start = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((start(new Date()) - start(when)) / 86_400_000);
  if (days <= 0) return 'today';
  if (days === 1) return 'yesterday';
  if (days < 7) return 'last_7_days';
  return 'older';
}

/** A modal confirmation built in the page (never window.confirm). */
export function confirmDialog(message, confirmLabel = 'Delete') {
  const dialog = $('#confirm-dialog');
  $('#confirm-message').textContent = message;
  $('#confirm-ok').textContent = confirmLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
    dialog.showModal();
    $('#confirm-cancel').focus();
  });
}

export function createSidebar({ getCurrentId, onNavigateAway, isShared = () => false, onShare = () => {} }) {
  const dom = {
    nav: $('#conversation-nav'),
    list: $('#conversation-list'),
    empty: $('#conversation-empty'),
    label: $('#list-label'),
    archiveToggle: $('#archive-toggle'),
    search: $('#search'),
    results: $('#search-results'),
    searchStatus: $('#search-status'),
    importButton: $('#import-button'),
    importFile: $('#import-file'),
    importStatus: $('#import-status'),
  };
  const s = {
    archived: false,
    items: [],
    cursor: null,
    loading: false,
    generation: 0,
    openMenu: null,
  };

  // --- the list -------------------------------------------------------------

  // The last item of a list with more pages; when it comes within 200 px of the
  // view, the next page loads. It is observed afresh at each render (`render`).
  const sentinel = el('li', { className: 'list-sentinel', 'aria-hidden': 'true' });
  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore();
    },
    { root: dom.nav, rootMargin: '200px' },
  );

  function itemEl(conv) {
    const current = conv.id === getCurrentId();
    const link = el('a', { href: `/c/${conv.id}/`, className: 'conversation-link', title: conv.title || 'Untitled' }, [
      el('span', { className: 'conversation-title', text: conv.title || 'Untitled' }),
      isShared(conv.id)
        ? el('span', { className: 'shared-marker', title: 'Shared: has a link' }, [
            el('span', { className: 'visually-hidden', text: 'Shared' }),
          ])
        : null,
      timeEl(conv.updated_at, 'when conversation-when'),
    ]);
    link.dataset.id = conv.id;
    if (current) {
      link.classList.add('current');
      link.setAttribute('aria-current', 'page');
    }
    const menuButton = el('button', {
      type: 'button',
      className: 'icon-button item-menu-button',
      'aria-haspopup': 'menu',
      'aria-expanded': 'false',
      'aria-label': `Actions for ${conv.title || 'Untitled'}`,
      title: 'More actions',
      text: '⋯',
    });
    const li = el('li', { className: 'conversation-item' }, [link, menuButton]);
    li.dataset.id = conv.id;
    if (conv.pinned) li.dataset.pinned = 'true';
    if (isShared(conv.id)) li.dataset.shared = 'true';
    return li;
  }

  function render() {
    const nodes = [];
    let group = null;
    for (const conv of s.items) {
      const g = s.archived ? 'archived' : conv.group || groupOf(conv);
      if (g !== group && !s.archived) {
        group = g;
        nodes.push(
          el('li', { className: 'conversation-group', role: 'presentation' }, [
            el('h3', { className: 'group-heading', text: GROUP_LABELS[g] || g }),
          ]),
        );
      }
      nodes.push(itemEl(conv));
    }
    if (s.cursor) nodes.push(sentinel);
    dom.list.replaceChildren(...nodes);
    // An observer reports changes only, but a new observe() reports where the
    // sentinel is now. So a sentinel still in view after this render (a page
    // that did not fill the view, or one scrolled to its end while the list was
    // loading, when loadMore had to decline) asks for the next page.
    observer.unobserve(sentinel);
    if (s.cursor) observer.observe(sentinel);
    dom.empty.hidden = s.items.length > 0 || s.loading;
    dom.empty.textContent = s.archived ? 'No archived conversations.' : 'No conversations yet.';
    s.openMenu = null;
  }

  function sortItems() {
    const rank = (c) => GROUP_ORDER.indexOf(c.group || groupOf(c));
    s.items.sort((a, b) => {
      if (!s.archived && rank(a) !== rank(b)) return rank(a) - rank(b);
      return a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : 0;
    });
  }

  async function fetchPage(cursor) {
    const params = new URLSearchParams({ archived: s.archived ? '1' : '0', tz_offset: String(tzOffset()) });
    if (cursor) params.set('cursor', cursor);
    return getJSON(`/api/history/?${params}`);
  }

  async function reload() {
    const generation = ++s.generation;
    s.loading = true;
    try {
      const body = await fetchPage(null);
      if (generation !== s.generation) return;
      s.items = body.conversations || [];
      s.cursor = body.next_cursor || null;
    } catch {
      /* keep what is shown */
    } finally {
      if (generation === s.generation) s.loading = false;
    }
    if (generation === s.generation) render();
  }

  async function loadMore() {
    if (!s.cursor || s.loading) return;
    const generation = s.generation;
    s.loading = true;
    try {
      const body = await fetchPage(s.cursor);
      if (generation !== s.generation) return;
      const known = new Set(s.items.map((c) => c.id));
      s.items.push(...(body.conversations || []).filter((c) => !known.has(c.id)));
      s.cursor = body.next_cursor || null;
    } catch {
      s.cursor = null; // stop trying; a reload starts over
    } finally {
      if (generation === s.generation) s.loading = false;
    }
    if (generation === s.generation) render();
  }

  /** Activity in a conversation: it moves to the top of its group. */
  function bump(conv) {
    if (s.archived) return;
    const index = s.items.findIndex((c) => c.id === conv.id);
    const existing = index === -1 ? null : s.items.splice(index, 1)[0];
    const item = { ...(existing || {}), ...conv, updated_at: new Date().toISOString() };
    item.group = item.pinned ? 'pinned' : 'today';
    s.items.unshift(item);
    sortItems();
    render();
  }

  /** A conversation's new title (another tab's rename, or a title its model
   * made): changed in place, as text; false if the list does not hold it. */
  function retitle(id, title) {
    const conv = s.items.find((c) => c.id === id);
    if (!conv) return false;
    conv.title = title;
    const li = dom.list.querySelector(`li.conversation-item[data-id="${CSS.escape(id)}"]`);
    if (!li) return true;
    const link = li.querySelector('.conversation-link');
    if (link) {
      link.title = title || 'Untitled';
      const text = link.querySelector('.conversation-title');
      if (text) text.textContent = title || 'Untitled';
    }
    const button = li.querySelector('.item-menu-button');
    if (button) button.setAttribute('aria-label', `Actions for ${title || 'Untitled'}`);
    // An open rename field keeps what the user is typing.
    return true;
  }

  function setArchived(archived) {
    s.archived = archived;
    dom.archiveToggle.setAttribute('aria-pressed', String(archived));
    dom.archiveToggle.textContent = archived ? 'Back to conversations' : 'Archived';
    dom.label.textContent = archived ? 'Archived' : 'Recent';
    s.items = [];
    s.cursor = null;
    render();
    reload();
  }

  dom.archiveToggle.addEventListener('click', () => setArchived(!s.archived));

  // --- per-conversation actions --------------------------------------------

  function closeMenu({ focus = false } = {}) {
    const open = s.openMenu;
    if (!open) return;
    s.openMenu = null;
    open.menu.remove();
    open.button.setAttribute('aria-expanded', 'false');
    if (focus) open.button.focus();
  }

  function openMenu(li, button) {
    closeMenu();
    const conv = s.items.find((c) => c.id === li.dataset.id);
    if (!conv) return;
    const item = (action, text) => {
      const b = el('button', { type: 'button', role: 'menuitem', className: 'menu-item', text });
      b.dataset.action = action;
      return b;
    };
    const menu = el('div', { className: 'item-menu', role: 'menu', 'aria-label': `Actions for ${conv.title || 'Untitled'}` }, [
      item('rename', 'Rename'),
      item('pin', conv.pinned ? 'Unpin' : 'Pin'),
      item('share', 'Share…'),
      item('usage', 'Usage…'),
      item('archive', conv.archived ? 'Unarchive' : 'Archive'),
      item('delete', 'Delete…'),
    ]);
    li.append(menu);
    button.setAttribute('aria-expanded', 'true');
    s.openMenu = { li, button, menu, conv };
    menu.querySelector('button').focus();
  }

  async function update(conv, changes) {
    const body = await postJSON(`/api/conversations/${conv.id}/update/?tz_offset=${tzOffset()}`, changes);
    return body.conversation;
  }

  function showListError(message) {
    dom.importStatus.textContent = message;
    dom.importStatus.dataset.kind = 'error';
  }

  function startRename(li, conv) {
    const link = li.querySelector('.conversation-link');
    const input = el('input', {
      type: 'text',
      className: 'rename-input',
      'aria-label': 'New title',
      maxlength: '200',
    });
    input.value = conv.title || '';
    link.hidden = true;
    li.querySelector('.item-menu-button').hidden = true;
    li.prepend(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== conv.title) {
        try {
          const updated = await update(conv, { title });
          Object.assign(conv, updated);
          if (conv.id === getCurrentId()) document.dispatchEvent(new CustomEvent('chatsite:renamed', { detail: conv }));
        } catch (err) {
          showListError(`Could not rename: ${err.message}`);
        }
      }
      render();
      const again = dom.list.querySelector(`li[data-id="${conv.id}"] .item-menu-button`);
      if (again) again.focus();
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        finish(true);
      } else if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener('blur', () => finish(true));
  }

  async function act(action, li, conv) {
    closeMenu();
    try {
      if (action === 'rename') {
        startRename(li, conv);
        return;
      }
      if (action === 'share') {
        onShare(conv);
        return;
      }
      if (action === 'usage') {
        showUsage(conv);
        return;
      }
      if (action === 'pin') {
        const updated = await update(conv, { pinned: !conv.pinned });
        Object.assign(conv, updated);
        sortItems();
        render();
      } else if (action === 'archive') {
        await update(conv, { archived: !conv.archived });
        s.items = s.items.filter((c) => c.id !== conv.id);
        render();
      } else if (action === 'delete') {
        const links = isShared(conv.id) ? ' Its shared links stop working too.' : '';
        const ok = await confirmDialog(`Delete “${conv.title || 'Untitled'}”? This cannot be undone.${links}`);
        if (!ok) return;
        await postJSON(`/api/conversations/${conv.id}/delete/`, {});
        s.items = s.items.filter((c) => c.id !== conv.id);
        render();
        if (conv.id === getCurrentId()) onNavigateAway();
      }
    } catch (err) {
      showListError(`Could not ${action}: ${err.message}`);
    }
  }

  dom.list.addEventListener('click', (event) => {
    const button = event.target.closest('button');
    if (!button) return;
    const li = button.closest('li.conversation-item');
    if (!li) return;
    if (button.classList.contains('item-menu-button')) {
      if (s.openMenu && s.openMenu.li === li) closeMenu();
      else openMenu(li, button);
    } else if (button.dataset.action && s.openMenu) {
      act(button.dataset.action, li, s.openMenu.conv);
    }
  });
  dom.list.addEventListener('keydown', (event) => {
    if (!s.openMenu || !s.openMenu.menu.contains(event.target)) return;
    const items = [...s.openMenu.menu.querySelectorAll('button')];
    const i = items.indexOf(event.target);
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      closeMenu({ focus: true });
    } else if (event.key === 'ArrowDown') {
      event.preventDefault();
      items[(i + 1) % items.length].focus();
    } else if (event.key === 'ArrowUp') {
      event.preventDefault();
      items[(i - 1 + items.length) % items.length].focus();
    }
  });
  document.addEventListener('click', (event) => {
    if (s.openMenu && !s.openMenu.li.contains(event.target)) closeMenu();
  });

  // --- search ---------------------------------------------------------------

  let searchTimer = 0;
  let searchGeneration = 0;

  function resultEl(hit) {
    const snippet = el('span', { className: 'result-snippet' });
    for (const part of Array.isArray(hit.snippet) ? hit.snippet : []) {
      const text = String(part && part.text !== undefined ? part.text : '');
      snippet.append(part && part.match ? el('mark', { text }) : document.createTextNode(text));
    }
    const href = hit.message ? `/c/${hit.conversation}/#m-${hit.message}` : `/c/${hit.conversation}/`;
    const link = el('a', { className: 'search-result', href }, [
      el('span', { className: 'result-title', text: hit.title || 'Untitled' }),
      hit.archived ? el('span', { className: 'result-tag', text: 'Archived' }) : null,
      snippet,
    ]);
    link.dataset.conversation = hit.conversation;
    if (hit.message) link.dataset.message = hit.message;
    return el('li', {}, [link]);
  }

  async function runSearch(query) {
    const generation = ++searchGeneration;
    try {
      const response = await fetch(`/api/search/?${new URLSearchParams({ q: query })}`, {
        credentials: 'same-origin',
        headers: { Accept: 'application/json' },
      });
      const body = await response.json();
      if (generation !== searchGeneration) return;
      if (!response.ok) {
        dom.results.replaceChildren();
        dom.searchStatus.textContent = body.message || 'Search failed.';
        return;
      }
      const hits = body.results || [];
      dom.results.replaceChildren(...hits.map(resultEl));
      dom.searchStatus.textContent = hits.length
        ? `${hits.length}${body.next_offset ? '+' : ''} result${hits.length === 1 ? '' : 's'}`
        : 'No results.';
    } catch {
      if (generation === searchGeneration) dom.searchStatus.textContent = 'Search failed.';
    }
  }

  function onSearchInput() {
    clearTimeout(searchTimer);
    const query = dom.search.value.trim();
    const searching = query !== '';
    document.body.classList.toggle('searching', searching);
    dom.results.hidden = !searching;
    dom.nav.hidden = searching;
    if (!searching) {
      searchGeneration++;
      dom.results.replaceChildren();
      dom.searchStatus.textContent = '';
      return;
    }
    searchTimer = setTimeout(() => runSearch(query), 250);
  }

  dom.search.addEventListener('input', onSearchInput);
  dom.search.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && dom.search.value) {
      event.preventDefault();
      event.stopPropagation();
      dom.search.value = '';
      onSearchInput();
    } else if (event.key === 'ArrowDown') {
      const first = dom.results.querySelector('a');
      if (first) {
        event.preventDefault();
        first.focus();
      }
    }
  });

  // --- import ---------------------------------------------------------------

  dom.importButton.addEventListener('click', () => dom.importFile.click());
  dom.importFile.addEventListener('change', async () => {
    const file = dom.importFile.files && dom.importFile.files[0];
    if (!file) return;
    dom.importStatus.dataset.kind = 'info';
    dom.importStatus.textContent = `Importing ${file.name}…`;
    const form = new FormData();
    form.append('file', file);
    try {
      const response = await fetch('/import/', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'X-CSRFToken': csrfToken(), Accept: 'application/json' },
        body: form,
      });
      let body = {};
      try {
        body = await response.json();
      } catch {
        body = {};
      }
      if (!response.ok) {
        dom.importStatus.dataset.kind = 'error';
        dom.importStatus.textContent = `Import failed: ${body.message || `HTTP ${response.status}`}`;
      } else {
        const n = body.imported || 0;
        const skipped = body.skipped_conversations || [];
        dom.importStatus.dataset.kind = 'ok';
        dom.importStatus.textContent = `Imported ${n} conversation${n === 1 ? '' : 's'}.`;
        if (skipped.length) {
          // Each skipped conversation and why, as text (titles come from the file).
          const list = document.createElement('ul');
          list.className = 'import-skipped';
          for (const item of skipped.slice(0, 10)) {
            const entry = document.createElement('li');
            entry.textContent = item.message;
            list.append(entry);
          }
          if (skipped.length > 10) {
            const more = document.createElement('li');
            more.textContent = `…and ${skipped.length - 10} more skipped.`;
            list.append(more);
          }
          dom.importStatus.append(list);
        }
        if (s.archived) setArchived(false);
        else reload();
      }
    } catch {
      dom.importStatus.dataset.kind = 'error';
      dom.importStatus.textContent = 'Import failed: the server could not be reached.';
    } finally {
      dom.importFile.value = '';
    }
  });

  return {
    /** Show the first page of the list, which the page came with (`{conversations,
     * next_cursor}`, as /api/history/ answers it); later pages load on scrolling. */
    start(page) {
      const first = page && Array.isArray(page.conversations) ? page.conversations : [];
      // Grouped by this browser's clock (the server did not know its time zone).
      s.items = first.map((c) => ({ ...c, group: groupOf(c) }));
      s.cursor = (page && page.next_cursor) || null;
      sortItems();
      render();
    },
    render,
    reload,
    bump,
    retitle,
    has: (id) => s.items.some((c) => c.id === id),
    focusSearch() {
      dom.search.focus();
      dom.search.select();
    },
  };
}
