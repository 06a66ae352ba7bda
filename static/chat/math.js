// TeX formulas in untrusted model output → sanitized KaTeX DOM, under the strict CSP.
//
// markdown.js finds the formulas (never inside code) and leaves each one as a
// placeholder whose text is the TeX source; renderMath() fills the placeholders.
//
// KaTeX is told to trust nothing (no \href, \url, \includegraphics, \htmlClass…:
// they render as red text), to cap every size (\rule{1000em}…) and every macro
// expansion (\def bombs), and to show errors as text instead of throwing. Its
// output (HTML for the eye, MathML for screen readers) still goes through
// DOMPurify with a policy of its own, below: only the elements, attributes and
// classes KaTeX emits. KaTeX positions its boxes with inline `style` attributes,
// which the CSP (style-src 'self') refuses to apply; so the sanitizer takes each
// style attribute off, keeps the declarations an allow-list of properties and
// values accepts, and they are assigned through the CSSOM (element.style), which
// the CSP does not govern. Nothing KaTeX emits is ever parsed in the live document.
//
// A formula is rendered once per source text (a streaming reply re-renders its
// last block many times a second): the cache keeps the sanitized tree and its
// styles, and every use is a cheap deep clone.

import katex from '../vendor/katex/katex.mjs';
// Copying a selection with formulas in it copies their TeX ($…$, $$…$$) as text.
import '../vendor/katex/contrib/copy-tex.mjs';
import createDOMPurify from '../vendor/dompurify/purify.es.mjs';

/** Longer formulas are shown as text: KaTeX's time and output grow with the source (about 150 bytes of DOM a character). */
export const MAX_TEX_LENGTH = 5000;
/** The largest size (in em) a formula may ask for (\rule, \kern, \hspace, \raisebox…). */
const MAX_SIZE_EM = 10;
const CACHE_ENTRIES = 1000;

const KATEX_OPTIONS = {
  output: 'htmlAndMathml',
  throwOnError: false,
  errorColor: '#cc0000',
  trust: false,
  strict: 'ignore',
  maxSize: MAX_SIZE_EM,
  maxExpand: 1000,
  // No shared `macros` object: a \gdef in one formula must not change another.
};

// --- the policy for KaTeX's output -------------------------------------------------

const MATHML_ATTRS = ['mathvariant', 'mathcolor', 'mathbackground', 'mathsize', 'scriptlevel', 'displaystyle'];
const MATH_ELEMENTS = {
  span: ['class', 'data-katex-style', 'aria-hidden', 'title'],
  // MathML, for assistive technology (KaTeX hides it visually).
  math: ['display'],
  semantics: [],
  annotation: ['encoding'],
  mrow: [],
  mi: MATHML_ATTRS,
  mn: MATHML_ATTRS,
  mo: [...MATHML_ATTRS, 'fence', 'lspace', 'rspace', 'stretchy', 'minsize', 'maxsize', 'separator', 'movablelimits'],
  mtext: MATHML_ATTRS,
  ms: MATHML_ATTRS,
  mspace: ['width', 'height', 'depth', 'mathbackground'],
  msup: [],
  msub: [],
  msubsup: [],
  mfrac: ['linethickness'],
  msqrt: [],
  mroot: [],
  mover: ['accent'],
  munder: ['accentunder'],
  munderover: [],
  mstyle: [...MATHML_ATTRS, 'data-katex-style'],
  mpadded: ['width', 'height', 'depth', 'lspace', 'voffset', 'mathbackground', 'data-katex-style'],
  mphantom: [],
  menclose: ['notation'],
  mtable: ['rowspacing', 'columnalign', 'columnspacing', 'columnlines', 'rowlines', 'width'],
  mtr: [],
  mtd: ['width', 'columnalign'],
  mlabeledtr: [],
  merror: [],
  // SVG, for stretchy things (\sqrt, \widehat, \overrightarrow, \cancel…).
  svg: ['width', 'height', 'viewbox', 'preserveaspectratio', 'data-katex-style'],
  path: ['d'],
  line: ['x1', 'y1', 'x2', 'y2', 'stroke-width'],
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

// Style declarations: the properties KaTeX sets, each with the values it may take.
const LENGTH = /^-?(?:\d+(?:\.\d+)?|\.\d+)(?:em|ex|px|pt|%)?$/;
const COLOR = /^(?:#[0-9a-f]{3,8}|[a-z]{1,30}|rgba?\(\s*[\d.]+%?\s*(?:,\s*[\d.]+%?\s*){2,3}\))$/i;
const lengths = (max) => new RegExp(`^(?:${LENGTH.source.slice(1, -1)})(?: (?:${LENGTH.source.slice(1, -1)})){0,${max - 1}}$`);
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
  margin: lengths(4),
  'padding-left': LENGTH,
  'border-width': LENGTH,
  'border-top-width': LENGTH,
  'border-bottom-width': LENGTH,
  'border-right-width': LENGTH,
  'border-right-style': /^(?:solid|dashed)$/,
  'border-style': /^(?:solid|dashed)$/,
  'border-color': COLOR,
  border: new RegExp(`^${LENGTH.source.slice(1, -1)} solid (?:${COLOR.source.slice(1, -1)})$`, 'i'),
  color: COLOR,
  'background-color': COLOR,
  position: /^relative$/,
  'text-shadow': /^0\.02em 0\.01em 0\.04px$/,
};
// KaTeX caps the sizes a formula asks for, but not negative ones: a \kern-1000em
// would pull what follows over the text before it. Horizontal shifts are kept
// within the same bound.
const CLAMPED = new Set(['margin-left', 'margin-right', 'left']);

function clampEm(value) {
  const m = /^(-?(?:\d+(?:\.\d+)?|\.\d+))em$/.exec(value);
  if (!m) return value;
  const n = Number(m[1]);
  return Math.abs(n) > MAX_SIZE_EM ? `${Math.sign(n) * MAX_SIZE_EM}em` : value;
}

/** The declarations of a style attribute that the allow-list accepts: [[property, value], …]. */
export function allowedDeclarations(style) {
  const kept = [];
  for (const part of String(style).split(';')) {
    const colon = part.indexOf(':');
    if (colon === -1) continue;
    const property = part.slice(0, colon).trim().toLowerCase();
    let value = part.slice(colon + 1).trim();
    if (!Object.hasOwn(STYLE_VALUES, property) || !STYLE_VALUES[property].test(value)) continue;
    if (CLAMPED.has(property)) value = clampEm(value);
    kept.push([property, value]);
  }
  return kept;
}

const purify = createDOMPurify(window);
const PURIFY_CONFIG = {
  ALLOWED_TAGS: Object.keys(MATH_ELEMENTS),
  ALLOWED_ATTR: [...new Set(Object.values(MATH_ELEMENTS).flat())],
  ALLOW_DATA_ATTR: false, // data-katex-style is named in ALLOWED_ATTR, and taken off by the hook
  ALLOW_ARIA_ATTR: true, // only aria-hidden passes the per-element rule below
  ALLOW_UNKNOWN_PROTOCOLS: false,
  SANITIZE_DOM: true,
  RETURN_DOM_FRAGMENT: true,
};

/** What KaTeX's `style` attributes are called while its markup is sanitized (see build). */
const STYLE_ATTRIBUTE = 'data-katex-style';

/** Style declarations of the tree being sanitized, by element: applied through the CSSOM later. */
let pendingStyles = null;

purify.addHook('uponSanitizeAttribute', (node, data) => {
  const tag = node.nodeName.toLowerCase();
  const name = data.attrName;
  if (!Object.hasOwn(MATH_ELEMENTS, tag) || !MATH_ELEMENTS[tag].includes(name)) {
    data.keepAttr = false;
    return;
  }
  if (name === STYLE_ATTRIBUTE) {
    const declarations = allowedDeclarations(data.attrValue);
    if (declarations.length && pendingStyles) pendingStyles.set(node, declarations);
    data.keepAttr = false; // never an attribute: the CSP would refuse it
  } else if (name === 'class') {
    const kept = data.attrValue.split(/\s+/).filter((c) => MATH_CLASSES.has(c) || MATH_CLASS_PATTERN.test(c));
    if (kept.length) data.attrValue = kept.join(' ');
    else data.keepAttr = false;
  } else if (name === 'aria-hidden') {
    if (data.attrValue !== 'true') data.keepAttr = false;
  } else if (name === 'encoding') {
    if (data.attrValue !== 'application/x-tex') data.keepAttr = false;
  }
});

// --- rendering, with a cache by source ----------------------------------------------

/** key → {fragment: sanitized inert tree, styles: [[element index, declarations], …]} */
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

function build(tex, display) {
  if (tex.length > MAX_TEX_LENGTH) {
    return errorEntry(tex, `This formula is too long to show (over ${MAX_TEX_LENGTH.toLocaleString('en-US')} characters).`);
  }
  let html;
  try {
    html = katex.renderToString(tex, { ...KATEX_OPTIONS, displayMode: display });
  } catch {
    // Not a ParseError (those are shown by KaTeX itself): too deeply nested, say.
    return errorEntry(tex, 'This formula could not be rendered.');
  }
  // Even an inert DOMParser document applies the page's CSP to the style
  // attributes it parses (each one would be refused and reported), so they are
  // renamed before parsing. KaTeX escapes every quote in text and attribute
  // values, so in its markup ` style="` only ever begins a real attribute.
  html = html.replace(/ style="/g, ` ${STYLE_ATTRIBUTE}="`);
  const found = new Map();
  pendingStyles = found;
  let fragment;
  try {
    fragment = purify.sanitize(html, PURIFY_CONFIG);
  } finally {
    pendingStyles = null;
  }
  const styles = [];
  if (found.size) {
    const elements = fragment.querySelectorAll('*');
    for (let i = 0; i < elements.length; i += 1) {
      const declarations = found.get(elements[i]);
      if (declarations) styles.push([i, declarations]);
    }
  }
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
  const fragment = document.importNode(entry.fragment, true);
  if (entry.styles.length) {
    const elements = fragment.querySelectorAll('*');
    for (const [index, declarations] of entry.styles) {
      const style = elements[index].style;
      for (const [property, value] of declarations) style.setProperty(property, value);
    }
  }
  return fragment;
}

/** The placeholders markdown.js leaves for formulas (their text is the TeX source). */
export const PLACEHOLDER_SELECTOR = 'span.math-inline, span.math-display, div.math-display';

/** Fill every formula placeholder under `root` (live nodes) with its rendered formula. */
export function renderMath(root) {
  for (const placeholder of root.querySelectorAll(PLACEHOLDER_SELECTOR)) {
    const tex = placeholder.textContent;
    placeholder.replaceChildren(mathFragment(tex, placeholder.classList.contains('math-display')));
  }
}
