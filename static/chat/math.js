// TeX formulas in untrusted model output → sanitized KaTeX DOM, under the strict CSP.
//
// markdown.js finds the formulas (never inside code) and leaves each one as a
// placeholder whose text is the TeX source; renderMath() fills the placeholders.
//
// KaTeX is told to trust nothing (no \href, \url, \includegraphics, \htmlClass…:
// they render as red text), to cap every size (\rule{1000em}…) and every macro
// expansion (\def bombs); a formula it cannot read is shown as its source text.
//
// KaTeX builds its DOM itself (its tree's toNode(), as katex.render does:
// createElement, and element.style for its layout, which the CSP does not
// govern; a style *attribute* in parsed markup the CSP refuses, even in
// DOMParser's inert documents). No markup is parsed at all, so there is nothing
// for an HTML sanitizer to parse safely; instead the tree KaTeX built is held
// to the policy below before it is shown: only the elements KaTeX emits (in
// their namespaces), the attributes each may carry, the classes KaTeX uses, and
// style declarations from an allow-list of properties and values. (Sanitizing KaTeX's HTML string with DOMPurify instead
// cost several times KaTeX's own time, and parsing it reported every style
// attribute as a CSP violation.)
//
// Why KaTeX's HTML and not only its MathML, which needs no styles at all and is
// several times cheaper: Chromium's MathML does not stretch delimiters around a
// matrix, ignores \mathbb and \mathcal, and does not widen accents. The MathML
// is still there (KaTeX hides it visually) for screen readers, and copy-tex uses
// its annotation to copy a formula as TeX.
//
// A formula is rendered once per source text (a streaming reply re-renders its
// last block many times a second): the cache keeps the checked tree and its
// styles, and every use is a deep clone with the styles assigned again.

import katex from '../vendor/katex/katex.mjs';
// Copying a selection with formulas in it copies their TeX ($…$, $$…$$) as text.
import '../vendor/katex/contrib/copy-tex.mjs';

/** Longer formulas are shown as text: KaTeX's time and output grow with the source (about 150 bytes of DOM a character). */
export const MAX_TEX_LENGTH = 2000;
/** The largest size (in em) a formula may ask for (\rule, \kern, \hspace, \raisebox…). */
const MAX_SIZE_EM = 10;
const CACHE_ENTRIES = 1000;

const KATEX_OPTIONS = {
  output: 'htmlAndMathml',
  // KaTeX's own error display (throwOnError: false) sets a style *attribute*,
  // which the CSP refuses: errors are caught and shown as text here instead.
  throwOnError: true,
  errorColor: '#cc0000',
  trust: false,
  strict: 'ignore',
  maxSize: MAX_SIZE_EM,
  maxExpand: 1000,
  // No shared `macros` object: a \gdef in one formula must not change another.
};

// --- the policy for KaTeX's output -------------------------------------------------

const HTML_NS = 'http://www.w3.org/1999/xhtml';
const MATHML_NS = 'http://www.w3.org/1998/Math/MathML';
const SVG_NS = 'http://www.w3.org/2000/svg';
const MATHML_ATTRS = ['class', 'mathvariant', 'mathcolor', 'mathbackground', 'mathsize', 'scriptlevel', 'displaystyle'];

/** namespace → element → the attributes it may keep (`style` is checked on its own). */
const MATH_ELEMENTS = {
  [HTML_NS]: { span: ['class', 'aria-hidden', 'title'] },
  // MathML, for assistive technology (KaTeX hides it visually).
  [MATHML_NS]: {
    math: ['display'],
    semantics: [],
    annotation: ['encoding'],
    mrow: MATHML_ATTRS,
    mi: MATHML_ATTRS,
    mn: MATHML_ATTRS,
    mo: [...MATHML_ATTRS, 'fence', 'lspace', 'rspace', 'stretchy', 'minsize', 'maxsize', 'separator', 'movablelimits'],
    mtext: MATHML_ATTRS,
    ms: MATHML_ATTRS,
    mspace: ['width', 'height', 'depth', 'mathbackground'],
    msup: MATHML_ATTRS,
    msub: MATHML_ATTRS,
    msubsup: MATHML_ATTRS,
    mfrac: [...MATHML_ATTRS, 'linethickness'],
    msqrt: MATHML_ATTRS,
    mroot: MATHML_ATTRS,
    mover: [...MATHML_ATTRS, 'accent'],
    munder: [...MATHML_ATTRS, 'accentunder'],
    munderover: MATHML_ATTRS,
    mstyle: MATHML_ATTRS,
    mpadded: [...MATHML_ATTRS, 'width', 'height', 'depth', 'lspace', 'voffset'],
    mphantom: MATHML_ATTRS,
    menclose: [...MATHML_ATTRS, 'notation'],
    mtable: [...MATHML_ATTRS, 'rowspacing', 'columnalign', 'columnspacing', 'columnlines', 'rowlines', 'width'],
    mtr: MATHML_ATTRS,
    mtd: [...MATHML_ATTRS, 'width', 'columnalign'],
    mlabeledtr: MATHML_ATTRS,
    merror: MATHML_ATTRS,
  },
  // SVG, for stretchy things (\sqrt, \widehat, \overrightarrow, \cancel…).
  [SVG_NS]: {
    svg: ['width', 'height', 'viewBox', 'preserveAspectRatio'],
    path: ['d'],
    line: ['x1', 'y1', 'x2', 'y2', 'stroke-width'],
  },
};
/** Attribute values that are checked, not just allowed. */
const ATTRIBUTE_VALUES = {
  'aria-hidden': /^true$/,
  encoding: /^application\/x-tex$/,
  display: /^block$/,
};

// The classes KaTeX's HTML output uses (its CSS styles them under .katex).
const MATH_CLASSES = new Set(
  (
    'accent accent-body accent-full accentunder allowbreak amsrm angl anglpad arraycolsep base boldsymbol ' +
    'boxpad brace-center brace-left brace-right cancel-lap cancel-pad cd-arrow-pad cd-label-left cd-label-right ' +
    'cd-vert-arrow cjk_fallback clap col-align-c col-align-l col-align-r colorbox delimcenter delimsizing ' +
    'delimsizinginner eqn-num fbox fcolorbox fix fleqn frac-line halfarrow-left halfarrow-right hdashline ' +
    'hide-tail hline inner katex katex-display katex-error katex-html katex-mathml large-op leqno llap mathbb ' +
    'mathbf mathboldfrak mathboldsf mathcal mathfrak mathit mathitsf mathnormal mathrm mathscr mathsf ' +
    'mathsfit mathtt mbin mclose mfrac minner mop mopen mord mover mpunct mrel mspace msupsub mtable mtight mult ' +
    'munder newline nobreak nulldelimiter op-limits op-symbol overlay overline overline-line pstrut rlap root ' +
    'rule small-op smash sout sizing sqrt stretchy strut svg-align tag text textbf textit textmd textrm textsf ' +
    'texttt textup thinbox underline underline-line vbox vertical-separator vlist vlist-r vlist-s vlist-t ' +
    'vlist-t2 x-arrow x-arrow-pad'
  ).split(' '),
);
const MATH_CLASS_PATTERN = /^(?:(?:reset-)?size\d{1,2}|delim-size\d)$/;

// Style declarations: the properties KaTeX sets (as the CSSOM writes them), each
// with the values it may take. None can load anything.
const LENGTH = /^-?(?:\d+(?:\.\d+)?|\.\d+)(?:em|ex|px|pt|%)?$/;
const COLOR = /^(?:#[0-9a-f]{3,8}|[a-z]{1,30}|rgba?\(\s*[\d.]+%?\s*(?:,\s*[\d.]+%?\s*){2,3}\))$/i;
const BORDER_STYLE = /^(?:solid|dashed)$/;
const LENGTH_SOURCE = LENGTH.source.slice(1, -1);
/** One to `count` lengths, space-separated (margin: 0px -0.02em). */
const lengths = (count) => new RegExp(`^${LENGTH_SOURCE}(?: ${LENGTH_SOURCE}){0,${count - 1}}$`);
const STYLE_VALUES = {
  height: LENGTH,
  width: /^(?:-?(?:\d+(?:\.\d+)?|\.\d+)(?:em|ex|px|pt|%)?|calc\(100% - \d+(?:\.\d+)?em\))$/,
  'min-width': LENGTH,
  top: LENGTH,
  bottom: LENGTH,
  left: LENGTH,
  'vertical-align': LENGTH,
  'margin-left': LENGTH,
  'margin-right': LENGTH,
  'margin-top': LENGTH,
  'margin-bottom': LENGTH,
  'padding-left': LENGTH,
  'border-top-width': LENGTH,
  'border-right-width': LENGTH,
  'border-bottom-width': LENGTH,
  'border-left-width': LENGTH,
  'border-top-style': BORDER_STYLE,
  'border-right-style': BORDER_STYLE,
  'border-bottom-style': BORDER_STYLE,
  'border-left-style': BORDER_STYLE,
  margin: lengths(4),
  'border-width': lengths(4),
  'border-style': BORDER_STYLE,
  'border-color': COLOR,
  border: new RegExp(`^${LENGTH_SOURCE} (?:solid|dashed) (?:${COLOR.source.slice(1, -1)})$`, 'i'),
  'border-top-color': COLOR,
  'border-right-color': COLOR,
  'border-bottom-color': COLOR,
  'border-left-color': COLOR,
  color: COLOR,
  'background-color': COLOR,
  position: /^relative$/,
  'text-shadow': /^0\.02em 0\.01em 0\.04px$/,
};
// KaTeX caps the sizes a formula asks for, but not negative ones: a \kern-1000em
// would pull what follows over the text before it. Horizontal shifts are kept
// within the same bound.
const CLAMPED = new Set(['margin-left', 'margin-right', 'margin', 'left']);

function clampEm(value) {
  return value
    .split(' ')
    .map((part) => {
      const m = /^(-?(?:\d+(?:\.\d+)?|\.\d+))em$/.exec(part);
      return m && Math.abs(Number(m[1])) > MAX_SIZE_EM ? `${Math.sign(Number(m[1])) * MAX_SIZE_EM}em` : part;
    })
    .join(' ');
}

/**
 * The declarations of a style attribute (as the CSSOM writes it: "height: 1em;
 * top: -2em;") that the allow-list accepts, as CSS text ('' if none).
 */
export function allowedStyle(style) {
  let kept = '';
  for (const part of String(style).split(';')) {
    const colon = part.indexOf(':');
    if (colon === -1) continue;
    const property = part.slice(0, colon).trim().toLowerCase();
    let value = part.slice(colon + 1).trim();
    if (!Object.hasOwn(STYLE_VALUES, property) || !STYLE_VALUES[property].test(value)) continue;
    if (CLAMPED.has(property)) value = clampEm(value);
    kept += `${kept ? ' ' : ''}${property}: ${value};`;
  }
  return kept;
}

/** What KaTeX's few style attributes are called until the policy takes them off (see build). */
const STYLE_ATTRIBUTE = 'data-katex-style';

const isMathClass = (c) => MATH_CLASSES.has(c) || MATH_CLASS_PATTERN.test(c);

/**
 * Hold the tree KaTeX built under `root` (detached) to the policy: other elements
 * go with their content, other attributes and classes go, and every style
 * attribute is taken off. Returns the kept declarations as CSS text by element
 * index (document order under root): [[index, cssText], …].
 */
function enforcePolicy(root) {
  const all = root.querySelectorAll('*');
  const styled = new Map();
  let removed = false;
  for (let i = 0; i < all.length; i += 1) {
    const element = all[i];
    const names = Object.hasOwn(MATH_ELEMENTS, element.namespaceURI) ? MATH_ELEMENTS[element.namespaceURI] : {};
    const allowed = Object.hasOwn(names, element.localName) ? names[element.localName] : null;
    if (!allowed) {
      element.remove();
      removed = true;
      continue;
    }
    for (const name of element.getAttributeNames()) {
      if (name === 'style' || name === STYLE_ATTRIBUTE) {
        const css = allowedStyle(element.getAttribute(name));
        element.removeAttribute(name);
        if (css) styled.set(element, (styled.has(element) ? `${styled.get(element)} ` : '') + css);
      } else if (
        !allowed.includes(name) ||
        (Object.hasOwn(ATTRIBUTE_VALUES, name) && !ATTRIBUTE_VALUES[name].test(element.getAttribute(name)))
      ) {
        element.removeAttribute(name);
      } else if (name === 'class') {
        const classes = element.getAttribute('class').split(' ');
        if (classes.every(isMathClass)) continue;
        const kept = classes.filter(isMathClass);
        if (kept.length) element.setAttribute('class', kept.join(' '));
        else element.removeAttribute('class');
      }
    }
  }
  const elements = removed ? root.querySelectorAll('*') : all;
  const styles = [];
  for (let i = 0; i < elements.length && styled.size; i += 1) {
    const css = styled.get(elements[i]);
    if (css !== undefined) styles.push([i, css]);
  }
  return styles;
}

// --- rendering, with a cache by source ----------------------------------------------

/** key → {fragment: the checked tree, without styles; styles: [[element index, cssText], …]} */
const cache = new Map();

function errorEntry(tex, reason) {
  const span = document.createElement('span');
  span.className = 'katex-error';
  span.title = reason;
  span.textContent = tex;
  const fragment = document.createDocumentFragment();
  fragment.append(span);
  return { fragment, styles: [] };
}

/**
 * Most of KaTeX's layout is set through the CSSOM (element.style), but a few of
 * its nodes carry a style *attribute* (\oiint's and tall delimiters' SVG, \pmb
 * and \fcolorbox in the MathML), which the CSP would refuse and report when
 * KaTeX sets it. So before its tree becomes DOM, those are renamed; the policy
 * then treats them as the style they are.
 */
function renameStyleAttributes(node) {
  const { attributes, children } = node;
  if (attributes && Object.hasOwn(attributes, 'style')) {
    attributes[STYLE_ATTRIBUTE] = attributes.style;
    delete attributes.style;
  }
  if (Array.isArray(children)) for (const child of children) renameStyleAttributes(child);
}

function build(tex, display) {
  if (tex.length > MAX_TEX_LENGTH) {
    return errorEntry(tex, `This formula is too long to show (over ${MAX_TEX_LENGTH.toLocaleString('en-US')} characters).`);
  }
  const holder = document.createElement('span');
  try {
    const tree = katex.__renderToDomTree(tex, { ...KATEX_OPTIONS, displayMode: display });
    renameStyleAttributes(tree);
    holder.append(tree.toNode()); // what katex.render does
  } catch (error) {
    // A ParseError says what and where ("KaTeX parse error: Undefined control
    // sequence: \foo at position 1…"); anything else (nested too deeply, say) does not.
    const reason = error instanceof katex.ParseError ? error.message : 'This formula could not be rendered.';
    return errorEntry(tex, reason);
  }
  const styles = enforcePolicy(holder);
  const fragment = document.createDocumentFragment();
  fragment.append(...holder.childNodes);
  return { fragment, styles };
}

function entryFor(tex, display) {
  const key = (display ? 'D' : 'I') + tex;
  let entry = cache.get(key);
  if (entry) {
    cache.delete(key); // most recently used last
  } else {
    entry = build(tex, display);
    if (cache.size >= CACHE_ENTRIES) cache.delete(cache.keys().next().value);
  }
  cache.set(key, entry);
  return entry;
}

/** A live DOM fragment showing `tex` (inline, or as a display formula). */
export function mathFragment(tex, display) {
  const entry = entryFor(tex, display);
  const fragment = entry.fragment.cloneNode(true);
  if (entry.styles.length) {
    const elements = fragment.querySelectorAll('*');
    // Through the CSSOM, which the CSP allows (a style attribute it refuses).
    for (const [index, css] of entry.styles) elements[index].style.cssText = css;
  }
  return fragment;
}

/** The placeholders markdown.js leaves for formulas (their text is the TeX source). */
export const PLACEHOLDER_SELECTOR = 'span.math-inline, span.math-display, div.math-display';

// --- a time budget per task -------------------------------------------------------
//
// A formula costs about a millisecond to render the first time (a cached one a
// tenth of that), so a reply with hundreds of them, opened from history, would
// hold the page for a second or more. So each task renders new formulas for at
// most TASK_BUDGET_MS; the rest keep showing their TeX source and are rendered
// in later tasks, a slice at a time, the last ones first (the end of the
// conversation is what the page shows). Once all are done the DOM is exactly
// what rendering them at once would have made.

const TASK_BUDGET_MS = 16;
const SLICE_MS = 8;
let spentThisTask = 0;
let budgetReset = false;
/** Placeholders waiting for their formula, oldest first. */
const pending = [];
let draining = false;

const isDisplay = (placeholder) => placeholder.classList.contains('math-display');

function fill(placeholder) {
  placeholder.replaceChildren(mathFragment(placeholder.textContent, isDisplay(placeholder)));
}

function drain() {
  const started = performance.now();
  while (pending.length && performance.now() - started < SLICE_MS) {
    const placeholder = pending.pop();
    // Gone since (a streaming reply's last block is rendered anew each frame): nothing to do.
    if (placeholder.isConnected) fill(placeholder);
  }
  if (pending.length) setTimeout(drain, 0);
  else draining = false;
}

/** How many formulas on the page still wait to be rendered (shown as their source until then). */
export function pendingMath() {
  return pending.filter((placeholder) => placeholder.isConnected).length;
}

/** Fill every formula placeholder under `root` (live nodes) with its rendered formula. */
export function renderMath(root) {
  if (!budgetReset) {
    budgetReset = true;
    setTimeout(() => {
      spentThisTask = 0;
      budgetReset = false;
    }, 0);
  }
  for (const placeholder of root.querySelectorAll(PLACEHOLDER_SELECTOR)) {
    const key = (isDisplay(placeholder) ? 'D' : 'I') + placeholder.textContent;
    if (cache.has(key) || spentThisTask < TASK_BUDGET_MS) {
      const started = performance.now();
      fill(placeholder);
      spentThisTask += performance.now() - started;
    } else {
      pending.push(placeholder);
    }
  }
  if (pending.length && !draining) {
    draining = true;
    setTimeout(drain, 0);
  }
}
