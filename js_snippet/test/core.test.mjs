// Unit tests of the tag's pure helpers (src/core.js): no DOM, no network.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ALLOWED_TAGS,
  SESSION_MS,
  allowAttr,
  applyEvent,
  behavior,
  cut,
  expired,
  pageView,
  parseUtm,
  safeUrl,
  sanitize,
  startSession,
  retryDelay,
  toEvent,
  why,
} from '../src/core.js';

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

describe('parseUtm', () => {
  test('maps utm_* to the Campaign fields', () => {
    assert.deepEqual(parseUtm('?utm_source=newsletter&utm_medium=email&utm_campaign=spring&utm_term=shoes&utm_content=top'), {
      source: 'newsletter',
      medium: 'email',
      name: 'spring',
      term: 'shoes',
      content: 'top',
    });
    assert.deepEqual(parseUtm('?utm_source=facebook&utm_medium=social&page=2'), { source: 'facebook', medium: 'social' });
  });

  test('is undefined without utm parameters', () => {
    assert.equal(parseUtm(''), undefined);
    assert.equal(parseUtm('?gclid=abc'), undefined);
    assert.equal(parseUtm('?utm_source=&utm_medium='), undefined);
    assert.equal(parseUtm('?UTM_SOURCE=x'), undefined); // the parameters are lowercase, as Google Analytics reads them
  });

  test('decodes percent-encoded UTF-8, "+" and raw non-ASCII', () => {
    assert.deepEqual(parseUtm('?utm_campaign=%C3%A9t%C3%A9+2024&utm_source=%E6%97%A5%E6%9C%AC&utm_content=%F0%9F%94%A5'), {
      name: 'été 2024',
      source: '日本',
      content: '🔥',
    });
    assert.deepEqual(parseUtm('?utm_term=café crème'), { term: 'café crème' });
    assert.deepEqual(parseUtm('?utm_medium=a%26b%3Dc'), { medium: 'a&b=c' });
  });

  test('survives malformed escapes', () => {
    const c = parseUtm('?utm_source=%E0%A4%A&utm_medium=%');
    assert.equal(typeof c.source, 'string');
    assert.equal(c.medium, '%');
  });

  test('cuts values to 256 code points without splitting a surrogate pair', () => {
    const c = parseUtm('?utm_campaign=' + encodeURIComponent('😀'.repeat(300)));
    assert.equal([...c.name].length, 256);
    assert.doesNotMatch(c.name, LONE_SURROGATE);
  });

  test('keeps the first of repeated parameters', () => {
    assert.deepEqual(parseUtm('?utm_source=a&utm_source=b'), { source: 'a' });
  });
});

describe('cut', () => {
  test('counts code points like Python len', () => {
    assert.equal(cut('abc', 2), 'ab');
    assert.equal(cut('a😀b', 2), 'a😀');
    assert.equal(cut('', 5), undefined);
    assert.equal(cut(null, 5), undefined);
  });
});

describe('safeUrl', () => {
  const safe = ['https://example.com/a?b=c', 'http://x.test', 'HTTPS://X.TEST', '//cdn.example.com/a.png', '/path', 'page.html', '?q=1', '#top', '  https://ok.test  ', 'a/b:c', 'java_script:x'];
  const unsafe = [
    'javascript:alert(1)',
    'JaVaScRiPt:alert(1)',
    ' javascript:alert(1)',
    '\tjava\nscript:alert(1)',
    'java\rscript:alert(1)',
    '\u0001javascript:alert(1)',
    'java\u0000script:alert(1)',
    'java\u00a0script:alert(1)',
    'javascript\t:alert(1)',
    'data:text/html;base64,PHNjcmlwdD4=',
    'DATA:image/svg+xml,<svg onload=alert(1)>',
    'vbscript:msgbox(1)',
    'VBScript:msgbox(1)',
    'file:///etc/passwd',
    'mailto:a@b.test',
    'ftp://x.test',
    'blob:https://x.test/1',
    '',
    '   ',
  ];
  for (const u of safe) test(`accepts ${JSON.stringify(u)}`, () => assert.equal(safeUrl(u), true));
  for (const u of unsafe) test(`rejects ${JSON.stringify(u)}`, () => assert.equal(safeUrl(u), false));
  test('rejects non-strings', () => {
    for (const u of [null, undefined, 1, {}, ['https://x.test']]) assert.equal(safeUrl(u), false);
  });
});

// A DOM just big enough for sanitize: a parsed tree (elements, text, comments) that sanitize
// changes in place (remove, removeAttribute), and a serialiser of what it returns.
const text = (data) => ({ nodeType: 3, data });
const comment = (data) => ({ nodeType: 8, data });
const el = (tag, attrs = {}, ...childNodes) => {
  const node = {
    nodeType: 1,
    localName: tag,
    attributes: Object.entries(attrs).map(([name, value]) => ({ name, value })),
    childNodes,
    removeAttribute(name) {
      node.attributes = node.attributes.filter((a) => a.name !== name);
    },
    remove() {
      node.parent.childNodes = node.parent.childNodes.filter((c) => c !== node);
    },
    // every element below, in document order (a static list, as the DOM's)
    querySelectorAll: (sel) => (assert.equal(sel, '*'), node.childNodes.filter((c) => c.nodeType == 1).flatMap((c) => [c, ...c.querySelectorAll('*')])),
  };
  for (const c of childNodes) c.parent = node;
  return node;
};
const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
const serialise = (n) =>
  n.nodeType == 3
    ? esc(n.data)
    : n.nodeType == 8
      ? `<!--${n.data}-->`
      : `<${n.localName}${n.attributes.map((a) => ` ${a.name}="${esc(a.value)}"`).join('')}>${n.childNodes.map(serialise).join('')}</${n.localName}>`;
/** What sanitize leaves of `nodes`, parsed into a body, as markup. */
const clean = (...nodes) => sanitize(el('body', {}, ...nodes)).map(serialise).join('');

describe('sanitize', () => {
  test('keeps allow-listed elements, attributes and text', () => {
    assert.equal(
      clean(el('div', { class: 'promo', title: 't' }, el('h2', {}, text('Sale')), el('p', {}, text('Up to '), el('strong', {}, text('30%')), text(' off')))),
      '<div class="promo" title="t"><h2>Sale</h2><p>Up to <strong>30%</strong> off</p></div>',
    );
    assert.equal(clean(el('a', { href: '/deals' }, text('Deals')), el('img', { src: 'https://cdn.test/a.png', alt: 'A' })), '<a href="/deals">Deals</a><img src="https://cdn.test/a.png" alt="A"></img>');
  });

  test('drops script, style, iframe and the like with their content', () => {
    for (const tag of ['script', 'style', 'iframe', 'object', 'embed', 'svg', 'math', 'template', 'form', 'input', 'textarea', 'link', 'meta', 'base', 'frame', 'noscript', 'section', 'table']) {
      assert.equal(clean(el('p', {}, text('a'), el(tag, { src: '/x' }, text('alert(1)')), text('b'))), '<p>ab</p>', tag);
    }
  });

  test('drops what allowed elements hold of the others, at any depth', () => {
    const deep = el('div', {}, el('ul', {}, el('li', { onclick: 'x' }, el('svg', {}, el('a', { href: 'javascript:x' }, text('in svg'))), el('span', {}, el('iframe', { src: '/x' }), text('kept')))));
    assert.equal(clean(deep), '<div><ul><li><span>kept</span></li></ul></div>');
  });

  test('comments stay comments: inert, never parsed as markup', () => {
    assert.equal(clean(comment('<script>alert(1)</script>'), text('ok')), '<!--<script>alert(1)</script>-->ok');
  });

  test('drops event handlers, style and unknown attributes', () => {
    assert.equal(
      clean(el('img', { src: '/a.png', onerror: 'alert(1)', onload: 'x', style: 'background:url(javascript:x)', srcset: 'javascript:x', 'data-x': '1' })),
      '<img src="/a.png"></img>',
    );
    assert.equal(clean(el('a', { href: '/x', onclick: 'steal()', target: '_blank', ping: 'https://t.test' }, text('x'))), '<a href="/x">x</a>');
  });

  test('drops href and src with unsafe schemes', () => {
    assert.equal(clean(el('a', { href: 'javascript:alert(1)' }, text('x'))), '<a>x</a>');
    assert.equal(clean(el('a', { href: ' JAVA\tSCRIPT:alert(1)' }, text('x'))), '<a>x</a>');
    assert.equal(clean(el('img', { src: 'data:image/svg+xml,<svg onload=alert(1)>' })), '<img></img>');
    assert.equal(clean(el('a', { href: 'vbscript:x' }, text('x'))), '<a>x</a>');
  });

  test('text stays text', () => {
    assert.equal(clean(text('<img src=x onerror=alert(1)>')), '&lt;img src=x onerror=alert(1)>');
  });

  test('the allow-list is the documented one', () => {
    const tags = 'a p span strong em b i h1 h2 h3 h4 ul ol li br img div small'.split(' ');
    for (const t of tags) assert.match(t, ALLOWED_TAGS);
    for (const t of ['h5', 'script', 'iframe', 'style', 'abbr', 'u', 'button', 'svg']) assert.doesNotMatch(t, ALLOWED_TAGS);
    for (const a of ['alt', 'title', 'class']) assert.equal(allowAttr(a, 'anything'), true);
    for (const a of ['onclick', 'onerror', 'style', 'id', 'srcset', 'formaction', 'xlink:href']) assert.equal(allowAttr(a, '/x'), false);
    assert.equal(allowAttr('href', 'https://x.test'), true);
    assert.equal(allowAttr('src', 'javascript:x'), false);
  });
});

describe('session', () => {
  const t0 = Date.UTC(2025, 0, 1, 12);
  const s = { id: 'abc', t: t0 };

  test('expires after 30 idle minutes', () => {
    assert.equal(SESSION_MS, 30 * 60 * 1000);
    assert.equal(expired(s, t0), false);
    assert.equal(expired(s, t0 + SESSION_MS - 1), false);
    assert.equal(expired(s, t0 + SESSION_MS), true);
    assert.equal(expired(s, t0 + 3 * SESSION_MS), true);
  });

  test('a missing or malformed session is expired', () => {
    for (const bad of [null, undefined, {}, { id: 'abc' }, { id: '', t: t0 }, { id: 'abc', t: 'yesterday' }]) {
      assert.equal(expired(bad, t0), true, JSON.stringify(bad));
    }
  });

  test('a new session is counted and resets the page views', () => {
    let p = startSession({});
    p = pageView(p, t0, []);
    p = pageView(p, t0 + 1000, []);
    assert.equal(p.sessionCount, 1);
    assert.equal(p.pageViews, 2);
    p = startSession(p);
    assert.equal(p.sessionCount, 2);
    assert.equal(p.pageViews, 0);
    assert.equal(p.pl, t0 + 1000); // the last page view of the previous session
  });
});

describe('profile', () => {
  const day = 864e5;
  const t0 = Date.UTC(2025, 0, 1);

  test('categories are unique, most recent last, cut and capped at 50', () => {
    let p = pageView({}, t0, ['shoes', ' electronics ', 'shoes', '']);
    assert.deepEqual(p.categoriesViewed, ['electronics', 'shoes']);
    p = pageView(p, t0, ['electronics', 'x'.repeat(100)]);
    assert.deepEqual(p.categoriesViewed, ['shoes', 'electronics', 'x'.repeat(64)]);
    for (let i = 0; i < 60; i++) p = pageView(p, t0, ['c' + i]);
    assert.equal(p.categoriesViewed.length, 50);
    assert.equal(p.categoriesViewed.at(-1), 'c59');
  });

  test('track events update the counters', () => {
    let p = {};
    p = applyEvent(p, 'search', { results: 0 }, t0);
    p = applyEvent(p, 'search', { results: 12 }, t0);
    p = applyEvent(p, 'cart', { items: 2, value: 40.5 }, t0);
    assert.deepEqual([p.searches, p.searchesWithoutResults, p.cartItems, p.cartValue], [2, 1, 2, 40.5]);
    p = applyEvent(p, 'conversion', { value: 20 }, t0 + day);
    p = applyEvent(p, 'conversion', { value: -5 }, t0 + day); // invalid value: counted, no revenue
    assert.deepEqual([p.purchases, p.revenue, p.lp, p.cartItems, p.cartValue], [2, 20, t0 + day, 0, 0]);
    assert.equal(applyEvent(p, 'click', {}, t0), p);
  });

  test('behavior has the wire names, days since the last visit and purchase, no internals', () => {
    let p = startSession({});
    p = pageView(p, t0, ['shoes']);
    p = applyEvent(p, 'conversion', { value: 10 }, t0);
    p = startSession(p);
    p = pageView(p, t0 + 3 * day, []);
    const b = behavior(p, t0 + 3.5 * day);
    assert.deepEqual(b, {
      sessionCount: 2,
      pageViews: 1,
      categoriesViewed: ['shoes'],
      purchases: 1,
      revenue: 10,
      cartItems: 0,
      cartValue: 0,
      daysSinceLastVisit: 3.5,
      daysSinceLastPurchase: 3.5,
    });
    assert.deepEqual(behavior({}, t0), { daysSinceLastVisit: undefined, daysSinceLastPurchase: undefined });
    assert.equal(behavior({ lp: t0 + day }, t0).daysSinceLastPurchase, 0); // a clock set back: never negative
  });
});

describe('toEvent', () => {
  const now = Date.UTC(2025, 4, 6, 7, 8, 9);
  const decision = { decisionId: 'd-1', visitorId: 'v', slots: { hero: { variantId: 'v-2', offerId: 'o-3' } } };
  const c = { sessionId: 's', decision, now, eventId: 'e-1' };

  test('fills the decision, its visitor, and the variant and offer of the slot', () => {
    assert.deepEqual(toEvent('click', { slot: 'hero' }, c), {
      type: 'click',
      visitorId: 'v',
      sessionId: 's',
      decisionId: 'd-1',
      slot: 'hero',
      variantId: 'v-2',
      offerId: 'o-3',
      value: undefined,
      timestamp: new Date(now),
      eventId: 'e-1',
    });
    // on the wire, the timestamp is its ISO 8601 string
    assert.equal(JSON.parse(JSON.stringify(toEvent('click', {}, c))).timestamp, '2025-05-06T07:08:09.000Z');
  });

  test('the visitor is the one the decision was issued to (a minted or throwaway id)', () => {
    const minted = { ...decision, visitorId: 'server-minted-id' };
    assert.equal(toEvent('impression', { slot: 'hero' }, { ...c, decision: minted }).visitorId, 'server-minted-id');
  });

  test('props override the defaults but not the identity or the event id', () => {
    const props = { value: 20, currency: 'EUR', decisionId: 'd-9', type: 'click', visitorId: 'x', eventId: 'replayed', properties: { sku: 'A1' } };
    const e = toEvent('conversion', props, c);
    assert.equal(e.type, 'conversion');
    assert.equal(e.visitorId, 'v');
    assert.equal(e.eventId, 'e-1');
    assert.equal(e.decisionId, 'd-9');
    assert.equal(e.value, 20);
    assert.equal(e.currency, 'EUR');
    assert.deepEqual(e.properties, { sku: 'A1' });
  });

  test('drops an invalid value; no value bound but the schema\'s', () => {
    assert.equal(toEvent('conversion', { value: -1, slot: 'hero' }, c).value, undefined);
    assert.equal(toEvent('conversion', { value: '20' }, c).value, undefined);
    assert.equal(toEvent('conversion', { value: 123456.78 }, c).value, 123456.78);
  });

  test('an event about no decision is not sent', () => {
    assert.equal(toEvent('conversion', { value: 5 }, { ...c, decision: undefined }), undefined);
    assert.equal(toEvent('pageview', {}, { ...c, decision: null }), undefined);
    // a decision without a usable visitor id (not of the schema's pattern) cannot be referred to
    assert.equal(toEvent('click', { slot: 'hero' }, { ...c, decision: { ...decision, visitorId: undefined } }), undefined);
    assert.equal(toEvent('click', { slot: 'hero' }, { ...c, decision: { ...decision, visitorId: 'bad id' } }), undefined);
    // the page may name the decision itself
    assert.equal(toEvent('conversion', { decisionId: 'd-0' }, { ...c, decision: { visitorId: 'v', slots: {} } }).decisionId, 'd-0');
  });

  test('only the schema event types are sent', () => {
    for (const t of ['impression', 'click', 'conversion', 'dismiss', 'not_interested', 'pageview']) assert.ok(toEvent(t, {}, c), t);
    for (const t of ['search', 'cart', 'purchase', 'Click', '', null, ['click']]) assert.equal(toEvent(t, {}, c), undefined, String(t));
  });
});

describe('retryDelay', () => {
  test('retries 429 and 503 only, three times at most', () => {
    assert.equal(retryDelay(429, null, 0, 0), 1000);
    assert.equal(retryDelay(503, null, 1, 0), 2000);
    assert.equal(retryDelay(503, null, 2, 1), 6000); // 4 s with 50% jitter
    assert.equal(retryDelay(503, null, 3, 0), -1);
    assert.equal(retryDelay(429, '7', 0, 0.5), 7000);
    assert.equal(retryDelay(429, '3600', 0, 0), 60000);
  });

  test('never retries what the server refused: forged, replayed, over-large, unauthorised', () => {
    for (const status of [400, 401, 403, 404, 409, 413, 422, 500, 502, 0]) assert.equal(retryDelay(status, '1', 0, 0), -1, String(status));
  });
});

describe('why', () => {
  test('the last decision\'s persona, reasons and slots; null without one', () => {
    const dec = {
      decisionId: 'd-1',
      persona: { id: 'deal_hunter', name: 'Deal hunter', affinities: { deal_hunter: 1 } },
      reasons: [{ code: 'utm', message: 'campaign newsletter/email' }],
      slots: { hero: { variantId: 'v-2', offerId: 'o-3', propensity: 0.9, reason: 'persona:deal_hunter' } },
      scores: { churn: 0.4 },
    };
    assert.deepEqual(why(dec), { persona: dec.persona, reasons: dec.reasons, slots: dec.slots });
    assert.equal(why(dec).slots.hero.reason, 'persona:deal_hunter');
    assert.equal(why(undefined), null);
  });
});
