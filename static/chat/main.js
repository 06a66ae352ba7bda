// The chat page, wired: the page's data into the state, the parts started in
// order, the socket opened last. See docs/protocol.md.
//
//   socket.js     the socket (the page's one)    protocol.js  client frames
//   receive.js    what each server frame does    state.js     what the page knows (no DOM)
//   render.js     the message list, controls     ui.js        elements, times, formatting
//   markdown.js   model text → safe DOM          composer.js  what the user asks
//   models.js     the model picker               sidebar.js   the list, search, import
//   settings.js   the settings dialog            http.js      JSON over HTTP
//   sharing.js    shared links (share.js: the shared page, an entry of its own)

import { initComposer, stopReply } from './composer.js';
import { socket, socketOpen } from './socket.js';
import { initModels } from './models.js';
import { socketUrl } from './protocol.js';
import { initReceive, receiveFrame, socketOpened } from './receive.js';
import { dom, followBottom, initMessageList, revealFromHash, setTitle, showMessages } from './render.js';
import { initSettings } from './settings.js';
import { confirmDialog, createSidebar } from './sidebar.js';
import { initSharing } from './sharing.js';
import { state, stateLoad } from './state.js';
import { $, refreshTimes, setErrorLabels } from './ui.js';

const data = JSON.parse(document.getElementById('page-data').textContent);
stateLoad({ data });
setErrorLabels(data.error_labels);
const messageList = initMessageList();

// --- sidebar, settings, export ----------------------------------------------------

const sharing = initSharing({ data, confirm: confirmDialog, onChange: () => sidebar.render() });
const sidebar = createSidebar({
  getCurrentId: () => (state.conversation ? state.conversation.id : null),
  onNavigateAway: () => location.assign('/'),
  isShared: sharing.isShared,
  onShare: (conv) => sharing.open(conv),
});
$('#share-button').addEventListener('click', () => state.conversation && sharing.open(state.conversation));
$('#shared-links-button').addEventListener('click', () => sharing.open(null));

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
  $('#share-button').hidden = !conv;
  if (!conv) return;
  $('#export-md').href = `/c/${conv.id}/export.md`;
  $('#export-json').href = `/c/${conv.id}/export.json`;
  $('#export-zip').href = `/c/${conv.id}/export.zip`;
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

// --- keyboard -----------------------------------------------------------------------

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

// --- start --------------------------------------------------------------------------

initReceive({ sidebar, onConversation: updateExportMenu });
setTitle(state.conversation ? state.conversation.title : null);
initModels({ data });
sidebar.start(data.history);
updateExportMenu();
showMessages(Array.isArray(data.messages) ? data.messages : []);
initComposer({ data });
requestAnimationFrame(async () => {
  if (!(await revealFromHash())) followBottom(true);
  requestAnimationFrame(messageList.watchEarlier);
});
let everConnected = false;
document.body.dataset.socket = 'connecting';
socketOpen(socketUrl(data.ws_path), {
  onOpen: socketOpened,
  onFrame: receiveFrame,
  onState(s) {
    document.body.dataset.socket = s;
    if (s === 'open') everConnected = true;
    // No banner for the first connection attempt; afterwards, until open again.
    dom.banner.hidden = s === 'open' || (!everConnected && s === 'connecting');
  },
  heartbeatMs: (Number(data.heartbeat_s) || 0) * 1000,
});
// "3 min ago" becomes "4 min ago": relative times follow the clock.
setInterval(() => refreshTimes(), 30_000);
if (window.matchMedia('(min-width: 48rem)').matches) dom.prompt.focus();

// For debugging and end-to-end tests.
window.chatsite = { socket, state };
