/**
 * Pure helpers of the Tailor tag: UTM parsing, URL-scheme safety, the HTML allow-list, session
 * expiry, the first-party behaviour profile, and the builders of the wire bodies (DecideRequest,
 * Event) whose field names follow sdk/schema.py (camelCase). Absent values are left undefined so
 * JSON.stringify omits them and the server's defaults apply.
 *
 * Nothing here touches window, document, storage or the network: every input is an argument, so
 * `node --test` imports this file directly. src/tailor.js is the browser shell around it.
 * Must not import anything.
 */

/** Inactivity after which a new session starts (the Segment / Google Analytics convention). */
export const SESSION_MS = 30 * 60 * 1000;

/** Id pattern of the schema (visitorId, sessionId, userId). */
export const ID = /^[\w.:-]{1,128}$/;
/** Slot id pattern of the schema. */
export const SLOT = /^[\w-]{1,64}$/;
/** Event types of the schema; track() sends only these. */
export const EVENT_TYPES = /^(impression|click|conversion|dismiss|not_interested|pageview)$/;

/** True when `v` is a string matching `re` (RegExp#test alone would accept undefined as "undefined"). */
export const ok = (re, v) => typeof v == 'string' && re.test(v);

/**
 * `s` cut to at most `n` code points (Python's len, which the schema's maxLength counts), never
 * splitting a surrogate pair; undefined for "", null and undefined.
 */
export const cut = (s, n) => (s ? [...s].slice(0, n).join('') : undefined);

/** `v` when it is a number in [0, max] (so finite), else undefined. */
export const num = (v, max) => (v >= 0 && v <= max && typeof v == 'number' ? v : undefined);

// --- campaign --------------------------------------------------------------------------------

/**
 * Campaign {source, medium, name, term, content} from the utm_* parameters of a query string
 * (only those present, the first of repeated ones), or undefined when it has none. Values are
 * percent- and "+"-decoded by URLSearchParams (malformed escapes stay text) and cut to 256 code
 * points.
 */
export function parseUtm(search) {
  const q = new URLSearchParams(search);
  let out;
  for (const k of ['source', 'medium', 'campaign', 'term', 'content']) {
    const v = cut(q.get('utm_' + k), 256);
    if (v) (out = out || {})[k == 'campaign' ? 'name' : k] = v;
  }
  return out;
}

// --- URL safety and the HTML allow-list ------------------------------------------------------

/**
 * True for http(s) and relative URLs; false for javascript:, data:, vbscript: and every other
 * scheme. Whitespace and control characters are removed before looking for a scheme, which is
 * stricter than browsers (they drop tab/newline anywhere and C0/space at the ends), so a URL
 * the browser would read with a scheme is seen here with that same scheme.
 */
export const safeUrl = (u) => typeof u == 'string' && /^(https?:|(?![a-z][a-z\d+.-]*:))./i.test(u.replace(/[\0-\x1f\s]/g, ''));

/** Elements kept (with allowed attributes only); any other element is dropped with its content. */
export const ALLOWED_TAGS = /^(a|p|span|strong|em|b|i|h[1-4]|ul|ol|li|br|img|div|small)$/;

/** Whether attribute `name` (lowercase) with `value` may stay on an allow-listed element. */
export const allowAttr = (name, value) => /^(alt|title|class)$/.test(name) || (/^(href|src)$/.test(name) && safeUrl(value));

/**
 * Cleans `root`, an inert parsed tree (a DOMParser document's body), in place and returns its
 * child nodes: allow-listed elements keep their allowed attributes only, and every other element
 * (script, style, iframe, svg, form...) is removed with its content; text and comments stay as
 * they are (inert). This is DOMPurify's way: nothing is serialised and parsed again, and nothing
 * runs or loads before the nodes are cleaned. Uses only querySelectorAll('*'), localName,
 * attributes, removeAttribute, remove and childNodes, so a test can pass plain objects.
 */
export function sanitize(root) {
  for (const el of root.querySelectorAll('*'))
    if (!ALLOWED_TAGS.test(el.localName)) el.remove();
    else for (const a of [...el.attributes]) allowAttr(a.name, a.value) || el.removeAttribute(a.name);
  return [...root.childNodes];
}

// --- session and behaviour profile -----------------------------------------------------------

/** True when stored session `s` ({id, t}) is missing or idle for SESSION_MS or more. */
export const expired = (s, now) => !(s && s.id && now - s.t < SESSION_MS);

/*
 * The first-party profile (kept in localStorage with consent, in memory otherwise) holds the
 * Behavior fields under their wire names, plus three times in ms: lv (last page view),
 * pl (last page view before this session) and lp (last purchase).
 */

const add = (a, b) => (a || 0) + b;

/** The profile when a new session starts: one more session, no page views yet. */
export const startSession = (p) => ({ ...p, sessionCount: add(p.sessionCount, 1), pageViews: 0, pl: p.lv });

/** The profile after a page view showing categories `cats` (unique, most recent last, at most 50). */
export function pageView(p, now, cats) {
  let c = p.categoriesViewed || [];
  for (let x of cats) if ((x = cut(x.trim(), 64))) c = c.filter((y) => y != x).concat(x);
  return { ...p, pageViews: add(p.pageViews, 1), lv: now, categoriesViewed: c.slice(-50) };
}

/**
 * The profile after track(type, props): "conversion" {value} counts a purchase and empties the
 * cart; "search" {results} counts a search, and one without results when results is 0; "cart"
 * {items, value} sets the cart. Any other type leaves it unchanged.
 */
export function applyEvent(p, type, props, now) {
  const v = num(props.value, 1e9);
  return type == 'conversion'
    ? { ...p, purchases: add(p.purchases, 1), revenue: add(p.revenue, v || 0), lp: now, cartItems: 0, cartValue: 0 }
    : type == 'search'
      ? { ...p, searches: add(p.searches, 1), searchesWithoutResults: add(p.searchesWithoutResults, +(props.results === 0)) }
      : type == 'cart'
        ? { ...p, cartItems: num(props.items, 1e6), cartValue: v }
        : p;
}

/** The Behavior body from a profile: its counters plus days since the last visit and purchase. */
export function behavior(p, now) {
  const { lv, pl, lp, ...b } = p;
  const days = (t) => (t > 0 ? Math.max(0, now - t) / 864e5 : undefined);
  return { ...b, daysSinceLastVisit: days(pl), daysSinceLastPurchase: days(lp) };
}

// --- event delivery --------------------------------------------------------------------------

/** Events sent per request; the schema's EventBatch takes at most 100. */
export const BATCH = 50;

/**
 * Milliseconds to wait before sending a batch of events again after an answer with `status`,
 * or -1 when it is not sent again: only 429 (rate limited) and 503 (unavailable) are retried,
 * `attempt` (0 for the first retry) up to 2; every other 4xx (403 forged-event, 409
 * replayed-event, 422 ...) would be refused again, so it is dropped. A Retry-After of whole seconds is obeyed (up to
 * 60 s); otherwise the wait is 1 s, 2 s, 4 s with up to 50% jitter (`rand` in [0, 1)).
 */
export function retryDelay(status, retryAfter, attempt, rand) {
  if ((status != 429 && status != 503) || attempt > 2) return -1;
  const s = /^\d+$/.test(retryAfter) ? Math.min(+retryAfter, 60) : 0;
  return s ? s * 1e3 : (1 + rand / 2) * 1e3 * 2 ** attempt;
}

// --- wire bodies -----------------------------------------------------------------------------

/**
 * The DecideRequest body. `w` is the browser as data, window-shaped: {location: {href, pathname,
 * search}, document: {referrer, title}, navigator: {userAgent, userAgentData?, language,
 * maxTouchPoints}, screen: {width, height}, devicePixelRatio}; navigator.userAgentData
 * serialises itself (toJSON) as {brands, mobile, platform}. `req` holds the top-level fields
 * {visitorId, visitorToken, sessionId, userId, userToken, consent: {personalization, storage},
 * behavior, slots}; without personalization consent neither the user (id and token) nor the
 * behaviour is sent. Strings are cut to the schema's
 * maximum lengths and invalid slot ids dropped, so the server never rejects the request for them.
 */
export function buildRequest(w, req, campaign, timeZone) {
  const loc = w.location;
  const nav = w.navigator;
  const personal = req.consent.personalization;
  const page = {
    url: loc.href.split('#')[0],
    path: loc.pathname,
    referrer: w.document.referrer,
    title: w.document.title,
    search: loc.search,
  };
  for (const k in page) page[k] = cut(page[k], k == 'title' ? 256 : 4096);
  return {
    ...req,
    ...(personal ? 0 : { userId: undefined, userToken: undefined, behavior: {} }),
    slots: req.slots.filter((s) => ok(SLOT, s)).slice(0, 32),
    context: {
      page,
      campaign: campaign || {},
      userAgent: nav.userAgent,
      userAgentData: nav.userAgentData,
      locale: nav.language,
      timezone: timeZone,
      screen: { width: w.screen.width, height: w.screen.height, density: w.devicePixelRatio, touch: nav.maxTouchPoints > 0 },
    },
  };
}

/**
 * The Event for track(type, props), or undefined when it cannot be sent: `type` is not an
 * event type of the schema, or it refers to no decision (the server takes events only about a
 * decision it issued to that visitor). `props` holds Event fields (slot, value, currency,
 * decisionId, variantId, offerId, properties{}); the decision, variant and offer default to
 * those of `c.decision` for props.slot, and the visitor is the one that decision was issued to.
 * Keys the schema does not know are ignored by the server. `c` is {decision, sessionId, now,
 * eventId}: `eventId` is a random id of the event (the server refuses an id it has seen).
 */
export function toEvent(type, props, c) {
  const dec = c.decision || { slots: {} };
  const sd = dec.slots[props.slot] || {};
  const e = {
    decisionId: dec.decisionId,
    variantId: sd.variantId,
    offerId: sd.offerId,
    ...props,
    type,
    visitorId: dec.visitorId,
    sessionId: c.sessionId,
    value: num(props.value, 1e9),
    timestamp: new Date(c.now), // JSON: the ISO 8601 string
    eventId: c.eventId,
  };
  if (ok(EVENT_TYPES, type) && e.decisionId && ok(ID, e.visitorId)) return e;
}

/**
 * "Why you see what you see", from decision `dec`: its persona, reasons and slots (per slot the
 * variant shown, its probability, experiment arm and the reason the policy gave); null without
 * one.
 */
export const why = (dec) => (dec ? { persona: dec.persona, reasons: dec.reasons, slots: dec.slots } : null);
