/**
 * The Tailor browser tag (entry point, bundled by build.mjs into one IIFE).
 *
 * The browser shell around src/core.js: reads its <script> element's data-* options, hides
 * [data-tailor-slot] elements while a decision is pending (never longer than data-timeout),
 * POSTs a DecideRequest as a CORS-simple text/plain request, fills the slots with sanitised
 * content, and turns window.tailor from a command queue into the API. Storage is written only
 * with consent; errors never reach the page (console.debug when data-debug is set).
 * Must import nothing but ./core.js: the tag has zero runtime dependencies.
 */
import { ID, applyEvent, behavior, buildRequest, expired, ok, pageView, parseUtm, safeUrl, sanitize, startSession, toEvent } from './core.js';

const w = window;
const d = document;
const html = d.documentElement;
const PENDING = 'data-tailor-pending';
const slots = () => d.querySelectorAll('[data-tailor-slot]');

let debug;
const log = (e) => debug && console.debug('tailor:', e);
/** `f`, unable to throw into the page. */
const safe =
  (f) =>
  (...a) => {
    try {
      return f(...a);
    } catch (e) {
      log(e);
    }
  };
const reveal = () => html.removeAttribute(PENDING);

function start() {
  const queued = w.tailor;
  if (queued && queued.version) return; // loaded twice
  // currentScript is null in some async cases: then find the tag by its attributes.
  const script = d.currentScript || d.querySelector('script[data-endpoint][src*="tailor"]') || {};
  const opt = script.dataset || {};
  const timeout = parseInt(opt.timeout);
  debug = opt.debug != null;

  // Hide the slots, and only them, until a decision is applied or the timeout fires.
  let done;
  const finish = () => reveal((done = 1));
  html.setAttribute(PENDING, '');
  setTimeout(finish, timeout >= 0 ? timeout : 600);
  const style = d.createElement('style');
  style.nonce = script.nonce || '';
  style.textContent = `html[${PENDING}] [data-tailor-slot]{visibility:hidden}`;
  d.head.appendChild(style);

  const base = (opt.endpoint || new URL(script.src || location).origin).replace(/\/+$/, '');
  const url = (path) => `${base}/v1/${path}` + (opt.key ? '?key=' + encodeURIComponent(opt.key) : '');

  // State lives in memory and is written through to localStorage (tailor.vid, tailor.sid,
  // tailor.profile) only with storage consent.
  const state = { profile: {} };
  let consent;
  const save = safe((k) => consent.storage && localStorage.setItem('tailor.' + k, k == 'vid' ? state.vid : JSON.stringify(state[k])));
  const update = (k, v) => save(k, (state[k] = v));
  const rid = () => crypto.getRandomValues(new Uint32Array(4)).join('-'); // 128 random bits
  /**
   * With storage consent, loads what is stored (stored values win) and saves the rest; without,
   * erases it, unless the answer is still `pending` (then storage is neither read nor written).
   */
  const setConsent = (personalization, storage, pending) => {
    const gpc = navigator.globalPrivacyControl === true; // Global Privacy Control: a denial
    consent = { personalization: !gpc && personalization, storage: !gpc && storage };
    ['vid', 'sid', 'profile'].map(
      safe((k) => {
        const key = 'tailor.' + k;
        if (consent.storage) {
          const v = localStorage.getItem(key);
          if (v != null) state[k] = k == 'vid' ? v : JSON.parse(v);
          save(k);
        } else if (!pending) localStorage.removeItem(key);
      }),
    );
    if (!ok(ID, state.vid)) update('vid', rid());
  };
  const granted = (opt.consent || 'granted') == 'granted';
  setConsent(granted, granted, opt.consent == 'pending');

  /**
   * The session id, touched; a new session (counted in the profile) after 30 idle minutes.
   * The session record {id, t, utm} also keeps the visit's campaign for its later page views.
   */
  const session = () => {
    const now = Date.now();
    if (expired(state.sid, now)) {
      state.sid = { id: rid() };
      update('profile', startSession(state.profile));
    }
    state.sid.t = now;
    save('sid');
    return state.sid.id;
  };

  let userId;
  let last;
  let lastApplied;
  const listeners = [];
  const events = [];

  /** The node showing Content `c`, or nothing to keep the slot's default content. */
  const render = (c, el) => {
    if (c.type == 'text' && c.text != null) return d.createTextNode(c.text);
    if (c.type == 'html' && c.html != null) {
      // DOMParser documents are inert: no script runs, nothing loads.
      return sanitize(new DOMParser().parseFromString(c.html, 'text/html').body.childNodes, d, d.createDocumentFragment());
    }
    if (c.type == 'link' && safeUrl(c.href)) {
      el = d.createElement('a');
      el.href = c.href;
      el.textContent = c.text || c.href;
    }
    if (c.type == 'image' && safeUrl(c.imageUrl)) {
      el = d.createElement('img');
      el.src = c.imageUrl;
      el.alt = c.alt || '';
    }
    return el;
  };

  /**
   * Fetches a decision, applies it and tells the listeners; resolves to it (null on failure).
   * The first decision of the page (`first`) is not applied once the timeout has fired.
   */
  const decide = (first) =>
    Promise.resolve()
      .then(() =>
        // A string body goes as "text/plain;charset=UTF-8": a CORS-simple request, no preflight.
        fetch(url('decide'), {
          method: 'POST',
          body: JSON.stringify(
            buildRequest(
              w,
              {
                visitorId: state.vid,
                sessionId: session(),
                userId,
                consent,
                behavior: behavior(state.profile, Date.now()),
                slots: [...slots()].map((el) => el.dataset.tailorSlot),
              },
              state.sid.utm,
              Intl.DateTimeFormat().resolvedOptions().timeZone,
            ),
          ),
        }),
      )
      .then((r) => {
        if (!r.ok) throw r.status;
        return r.json();
      })
      .then(
        (dec) => {
          last = dec;
          lastApplied = !(first && done); // after the timeout the default content stays
          if (lastApplied)
            slots().forEach(
              safe((slot) => {
                const sd = dec.slots[slot.dataset.tailorSlot];
                const node = sd && render(sd.content);
                if (node) {
                  slot.textContent = '';
                  slot.appendChild(node);
                  slot.dataset.tailorVariant = sd.variantId;
                  slot.dataset.tailorDecision = dec.decisionId;
                }
              }),
            );
          finish();
          listeners.map((cb) => safe(cb)(dec, lastApplied));
          return dec;
        },
        (e) => {
          finish(log(e));
          return null;
        },
      );

  w.addEventListener(
    'pagehide',
    safe(() => {
      while (events.length) {
        const body = JSON.stringify({ events: events.splice(0, 100) });
        navigator.sendBeacon(url('events'), new Blob([body], { type: 'text/plain' }));
      }
    }),
  );

  const api = {
    push: (...commands) => commands.map(safe((c) => api[c[0]](...c.slice(1)))),
    decide: () => decide(),
    onDecision: (cb) => {
      listeners.push(cb);
      if (last) safe(cb)(last, lastApplied);
    },
    setConsent: (c) => setConsent(!!c.personalization, !!c.storage),
    track: (type, props) => {
      props = props || {};
      const sessionId = session();
      const now = Date.now();
      update('profile', applyEvent(state.profile, type, props, now));
      const e = toEvent(type, props, { visitorId: state.vid, sessionId, decision: last, now });
      if (e) events.push(e);
    },
    identify: (id) => {
      userId = ok(ID, id) ? id : undefined;
    },
  };
  for (const k in api) api[k] = safe(api[k]);
  api.version = __VERSION__;
  w.tailor = api;
  if (Array.isArray(queued)) api.push(...queued);

  // The page view and the first decision, once the slots are in the DOM.
  const run = safe(() => {
    session();
    const utm = parseUtm(location.search);
    if (utm) save('sid', (state.sid.utm = utm));
    const cats = [...d.querySelectorAll('[data-tailor-category]')].map((e) => e.dataset.tailorCategory);
    update('profile', pageView(state.profile, Date.now(), cats));
    decide(1);
  });
  if (d.readyState == 'loading') d.addEventListener('DOMContentLoaded', run);
  else run();
}

try {
  start();
} catch (e) {
  reveal();
  log(e);
}
