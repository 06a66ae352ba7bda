// TeX formulas in untrusted model output → sanitized KaTeX DOM, under the strict CSP.
//
// markdown.js finds the formulas (never inside code) and leaves each one as a
// placeholder whose text is the TeX source; renderMath() fills the placeholders.
//
// KaTeX is told to trust nothing (no \href, \url, \includegraphics, \htmlClass…:
// they render as red text), to cap every size (\rule{1000em}…) and every macro
// expansion (\def bombs); a formula it cannot read is shown as its source text.
//
// KaTeX builds its DOM itself (katex.render: createElement, and element.style
// for its layout, which the CSP does not govern; a style *attribute* in parsed
// markup it refuses, even in DOMParser's inert documents). No markup is parsed
// at all, so there is nothing for an HTML sanitizer to parse safely; instead
// the tree KaTeX built is held to the policy below before it is shown: only the
// elements KaTeX emits (in their namespaces), the attributes each may carry, the
// classes KaTeX's stylesheet knows, and style declarations from an allow-list of
// properties and values. (Sanitizing KaTeX's HTML string with DOMPurify instead
// costs about 8 times KaTeX's own time: measured in the report of issue #12.)
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

// Style declarations: the properties KaTeX sets (as the CSSOM spells them, in
// longhands), each with the values it may take. None can load anything.
const LENGTH = /^-?(?:\d+(?:\.\d+)?|\.\d+)(?:em|ex|px|pt|%)?$/;
const COLOR = /^(?:#[0-9a-f]{3,8}|[a-z]{1,30}|rgba?\(\s*[\d.]+%?\s*(?:,\s*[\d.]+%?\s*){2,3}\))$/i;
const BORDER_STYLE = /^(?:solid|dashed)$/;
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
const CLAMPED = new Set(['margin-left', 'margin-right', 'left']);

function clampEm(value) {
  const m = /^(-?(?:\d+(?:\.\d+)?|\.\d+))em$/.exec(value);
  if (!m) return value;
  const n = Number(m[1]);
  return Math.abs(n) > MAX_SIZE_EM ? `${Math.sign(n) * MAX_SIZE_EM}em` : value;
}

/** The declarations of `element.style` the allow-list accepts: [[property, value], …]. */
export function allowedDeclarations(style) {
  const kept = [];
  for (let i = 0; i < style.length; i += 1) {
    const property = style[i];
    let value = style.getPropertyValue(property).trim();
    if (style.getPropertyPriority(property) || !Object.hasOwn(STYLE_VALUES, property)) continue;
    if (!STYLE_VALUES[property].test(value)) continue;
    if (CLAMPED.has(property)) value = clampEm(value);
    kept.push([property, value]);
  }
  return kept;
}

const isMathClass = (c) => MATH_CLASSES.has(c) || MATH_CLASS_PATTERN.test(c);

/**
 * Hold the tree KaTeX built under `root` (detached) to the policy: other elements
 * go with their content, other attributes and classes go, and every style
 * attribute is taken off. Returns the kept declarations by element index
 * (document order under root): [[index, [[property, value], …]], …].
 */
function enforcePolicy(root) {
  for (const element of Array.from(root.querySelectorAll('*'))) {
    const elements = Object.hasOwn(MATH_ELEMENTS, element.namespaceURI) ? MATH_ELEMENTS[element.namespaceURI] : {};
    const allowed = Object.hasOwn(elements, element.localName) ? elements[element.localName] : null;
    if (!allowed) {
      element.remove();
      continue;
    }
    for (const { name, value } of Array.from(element.attributes)) {
      if (name === 'style') continue;
      if (!allowed.includes(name) || (Object.hasOwn(ATTRIBUTE_VALUES, name) && !ATTRIBUTE_VALUES[name].test(value))) {
        element.removeAttribute(name);
      } else if (name === 'class') {
        const kept = value.split(/\s+/).filter(isMathClass);
        if (kept.length) element.setAttribute('class', kept.join(' '));
        else element.removeAttribute('class');
      }
    }
  }
  const styles = [];
  const elements = root.querySelectorAll('*');
  for (let i = 0; i < elements.length; i += 1) {
    const element = elements[i];
    if (!element.hasAttribute('style')) continue;
    const declarations = allowedDeclarations(element.style);
    element.removeAttribute('style');
    if (declarations.length) styles.push([i, declarations]);
  }
  return styles;
}

// --- rendering, with a cache by source ----------------------------------------------

/** key → {fragment: the checked tree, without styles; styles: [[element index, declarations], …]} */
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
  const holder = document.createElement('span');
  try {
    katex.render(tex, holder, { ...KATEX_OPTIONS, displayMode: display });
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
