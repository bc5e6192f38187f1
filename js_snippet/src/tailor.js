/**
 * The Tailor browser tag (entry point, bundled by build.mjs into one IIFE).
 *
 * The browser shell around src/core.js: reads its <script> element's data-* options, hides
 * [data-tailor-slot] elements while a decision is pending (never longer than data-timeout),
 * POSTs a DecideRequest as a CORS-simple text/plain request, fills the slots with sanitised
 * content, and turns window.tailor from a command queue into the API. It keeps the visitor id
 * and token the server issues, sends events about its decisions, and lets the visitor see
 * (myData, imported on first use from ./tailor-me.js) and erase (forget) what is stored about
 * them. Storage is written only with consent; errors never reach the page (console.debug when
 * data-debug is set).
 * Must import nothing but ./core.js (and import() ./tailor-me.js): the tag has zero runtime
 * dependencies.
 */
import { BATCH, ID, applyEvent, behavior, buildRequest, expired, ok, pageView, parseUtm, retryDelay, safeUrl, sanitize, startSession, toEvent } from './core.js';

const w = window;
const d = document;
const html = d.documentElement;
const P = 'data-tailor-pending';
const SLOT = '[data-tailor-slot]';
const slots = () => [...d.querySelectorAll(SLOT)];
const perf = () => performance.now() | 0;
const page = () => location.href.split('#')[0];

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
const reveal = () => html.removeAttribute(P);

function start() {
  const queued = w.tailor;
  if (queued && queued.version) return; // loaded twice
  // currentScript is null in some async cases: then find the tag by its attributes.
  const script = d.currentScript || d.querySelector('script[data-endpoint][src*="tailor"]') || {};
  const opt = script.dataset || {};
  let timeout = parseInt(opt.timeout);
  timeout = timeout >= 0 ? timeout : 600;
  debug = opt.debug != null;

  // Hide the slots, and only them: every slot while <html> has the attribute (until the page
  // is parsed or the timeout fires), then each slot waiting for a decision carries it itself.
  const t0 = perf();
  html.setAttribute(P, '');
  setTimeout(reveal, timeout);
  const style = d.createElement('style');
  style.nonce = script.nonce;
  style.textContent = `[${P}] ${SLOT},${SLOT}[${P}]{visibility:hidden}`;
  d.head.appendChild(style);

  const base = (opt.endpoint || new URL(script.src || location).origin).replace(/\/+$/, '');
  const url = (path) => `${base}/v1/${path}` + (opt.key ? '?key=' + encodeURIComponent(opt.key) : '');
  // State lives in memory and is written through to localStorage (tailor.vid, tailor.sid,
  // tailor.profile, tailor.tok) only with storage consent.
  const rid = () => crypto.getRandomValues(new Uint32Array(4)).join('-'); // 128 random bits
  const blank = () => ({ profile: {}, vid: rid() });
  let state = blank();
  /** The JSON body of a request: `body` and the visitor token, when the tag has one. */
  const json = (body) => JSON.stringify({ visitorToken: state.tok, ...body });
  // A string body goes as "text/plain;charset=UTF-8": a CORS-simple request, no preflight.
  const send = (path, body) => fetch(url(path), { method: 'POST', body: json(body), keepalive: true });

  // Feedback events wait in `events` and leave in batches: after a second, at BATCH events, and
  // with sendBeacon when the page is hidden. Nothing leaves while consent is pending; a refusal
  // drops them.
  const events = [];
  let timer;
  let consent;
  let pending;
  const none = () => !consent.personalization && !consent.storage; // nothing granted (yet)
  const refused = () => !pending && none();
  const post = (batch, attempt) =>
    send('events', { events: batch, consent }).then((r) => {
      const wait = retryDelay(r.status, r.headers.get('retry-after'), attempt, Math.random());
      if (wait >= 0) setTimeout(() => post(batch, attempt + 1), wait);
    }, log);
  const flush = safe((hidden) => {
    clearTimeout(timer);
    timer = 0;
    if (pending) return;
    while (events.length) {
      const batch = events.splice(0, BATCH);
      if (!(hidden && navigator.sendBeacon(url('events'), json({ events: batch, consent })))) post(batch, 0);
    }
  });
  const queue = (e) => {
    if (e && !refused()) {
      events.push(e);
      if (events.length < BATCH) timer = timer || setTimeout(flush, 1000);
      else flush();
    }
  };

  const KEYS = ['vid', 'sid', 'profile', 'tok'];
  const raw = (k) => k == 'vid' || k == 'tok'; // stored as they are, the others as JSON
  /**
   * Writes state[k] through to storage with storage consent (removes it when unset), erases it
   * without, and leaves storage alone while the answer is pending.
   */
  const save = safe((k, v) => {
    v = state[k];
    if (consent.storage && v) localStorage.setItem('tailor.' + k, raw(k) ? v : JSON.stringify(v));
    else if (!pending) localStorage.removeItem('tailor.' + k);
  });
  const update = (k, v) => save(k, (state[k] = v));
  /**
   * With storage consent, loads what is stored (stored values win) and saves the rest; without,
   * erases it, unless the answer is still pending (then storage is neither read nor written).
   */
  const setConsent = (personalization, storage, wait) => {
    const gpc = !!navigator.globalPrivacyControl; // Global Privacy Control: a denial
    consent = { personalization: !gpc && personalization, storage: !gpc && storage };
    pending = !gpc && wait;
    KEYS.map(
      safe((k) => {
        const v = consent.storage && localStorage.getItem('tailor.' + k);
        if (v) state[k] = raw(k) ? v : JSON.parse(v);
        save(k);
      }),
    );
    if (!ok(ID, state.vid)) update('vid', rid());
    if (refused()) events.length = 0;
    else flush();
  };
  // Nothing is stored before consent unless the site declares data-consent="granted".
  const granted = opt.consent == 'granted';
  setConsent(granted, granted, !opt.consent || opt.consent == 'pending');

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

  let user = {};
  let last;
  let held = []; // track() calls waiting for the page's first decision
  let lastApplied;
  let lastPage;
  const listeners = [];
  /**
   * Counts track(type, props) in the profile and queues its event about decision `dec` (the
   * last one by default); before the page's first decision, the event waits for it.
   */
  const track = (type, props, dec = last) => {
    const sessionId = session();
    const now = Date.now();
    update('profile', applyEvent(state.profile, type, props, now));
    const make = () => queue(toEvent(type, props, { decision: dec || last, sessionId, now, eventId: rid() }));
    if (dec || !held) make();
    else held.push(make);
  };
  const known = new WeakSet(); // slot elements given to a decision
  let filled = new WeakMap(); // slot element -> [{slot}, the decision that fills it]

  /** The nodes (strings for text) showing Content `c`; nothing keeps the slot's default content. */
  const render = (c, el) => {
    if (c.type == 'text' && c.text != null) return [c.text];
    // DOMParser documents are inert: no script runs, nothing loads.
    if (c.type == 'html' && c.html != null) return sanitize(new DOMParser().parseFromString(c.html, 'text/html').body);
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
    return el && [el];
  };

  // Impressions: once per filled slot and variant, when at least half of the slot is visible
  // (every ES2019 browser has IntersectionObserver).
  const feedback = (type, el) => (el = filled.get(el)) && track(type, ...el);
  const seen =
    new IntersectionObserver(
      (entries) =>
        entries.map(
          safe((en) => {
            if (en.isIntersecting) {
              seen.unobserve(en.target);
              feedback('impression', en.target);
            }
          }),
        ),
      { threshold: 0.5 },
    );

  /** Shows decision `dec` in slot `el` (unless it shows that variant already). */
  const fill = (el, dec) => {
    const sd = dec.slots[el.dataset.tailorSlot];
    const node = sd && el.dataset.tailorVariant != sd.variantId && render(sd.content);
    if (node) {
      el.textContent = '';
      el.append(...node);
      el.dataset.tailorVariant = sd.variantId;
      el.dataset.tailorDecision = dec.decisionId;
      filled.set(el, [{ slot: el.dataset.tailorSlot }, dec]);
      seen.unobserve(el);
      seen.observe(el);
    }
  };

  /**
   * Fetches a decision for the slots on the page, applies it and tells the listeners; resolves
   * to it (null on failure). `hide` lists the slots waiting for it: they stay hidden until it is
   * applied or until `deadline` (performance.now() ms), after which their default content shows
   * and stays. Without `hide` (tailor.decide()), it is applied to every slot. `t` receives the
   * timings: {late, shown, decided}.
   */
  const decide = (hide, deadline, t = {}) => {
    const show = () => {
      clearTimeout(t.timer);
      t.shown = t.shown || perf();
      if (hide) hide.map((el) => el.removeAttribute(P));
    };
    if (hide) {
      hide.map((el) => known.add(el) && el.setAttribute(P, ''));
      t.timer = setTimeout(() => show((t.late = 1)), deadline - perf());
    }
    let req;
    return Promise.resolve()
      .then(() => {
        const sid = session();
        // Before any consent (pending) and after a refusal: a throwaway id, no session, no token
        // (json() adds the tag's token to a body that does not set one).
        const anonymous = none();
        return send(
          'decide',
          (req = buildRequest(
            w,
            {
              ...(anonymous ? { visitorId: rid(), visitorToken: undefined } : { visitorId: state.vid, sessionId: sid }),
              ...user,
              consent,
              behavior: behavior(state.profile, Date.now()),
              slots: [...new Set(slots().map((el) => el.dataset.tailorSlot))],
            },
            state.sid.utm,
            Intl.DateTimeFormat().resolvedOptions().timeZone,
          )),
        );
      })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then(
        (dec) => {
          t.decided = perf();
          // A token comes with a visitor id of the server's (a new one when it could not
          // verify ours): keep both, unless the request was anonymous (a throwaway id) or
          // forget() started afresh meanwhile.
          if (dec.visitorToken && req.visitorId == state.vid) update('vid', dec.visitorId), update('tok', dec.visitorToken);
          last = dec;
          lastPage = page();
          // after the timeout the default content stays
          if ((lastApplied = !t.late)) (hide || slots()).map(safe((el) => fill(el, dec)));
          show();
          listeners.map((cb) => safe(cb)(dec, lastApplied));
          return dec;
        },
        (e) => {
          show(log(e));
          return null;
        },
      );
  };

  /**
   * A page view: counted in the profile with its categories and campaign, then a decision for
   * the slots not yet given one (`extra` too), and a pageview event; the first page view's
   * event carries the anti-flicker timings (ms since navigation start and since hiding began).
   */
  const view = (first, extra = []) => {
    session();
    const utm = parseUtm(location.search);
    if (utm) save('sid', (state.sid.utm = utm));
    const cats = [...d.querySelectorAll('[data-tailor-category]')].map((e) => e.dataset.tailorCategory);
    update('profile', pageView(state.profile, Date.now(), cats));
    const t = {};
    decide(extra.concat(slots().filter((el) => !known.has(el))), first ? t0 + timeout : perf() + timeout, t).then((dec) => {
      const properties = first ? { timeToDecisionMs: t.decided, slotsHiddenMs: t.shown - t0, timedOut: !!t.late } : {};
      if (dec) track('pageview', { properties }, dec); // about no decision when the decide failed
      // Events tracked before the first decision refer to it (or, when it failed, are dropped).
      if (held) held.map((f) => f());
      held = 0;
    });
    if (first) reveal(); // the slots hide themselves from here on
  };

  // Single-page apps: a history navigation is a page view (decided once the app has rendered
  // it); slots added later get a decision of their own, or the last one when it covers them.
  let href = page();
  let fresh = [];
  let navigated;
  let tick;
  let ready;
  const later = () =>
    (tick =
      tick ||
      setTimeout(
        safe(() => {
          const els = fresh.filter((el) => el.isConnected);
          tick = 0;
          fresh = [];
          if (navigated) return view((navigated = 0), els);
          const rest = els.filter((el) => !(last && lastPage == page() && last.slots[el.dataset.tailorSlot]));
          els.map((el) => rest.includes(el) || (fill(el, last), el.removeAttribute(P)));
          if (rest.length) decide(rest, perf() + timeout);
        }),
      ));
  const nav = () => {
    if (page() != href) {
      href = page();
      later((navigated = 1));
    }
  };
  ['pushState', 'replaceState'].map((m) => {
    const f = history[m];
    history[m] = function (...a) {
      const r = f.apply(this, a);
      safe(nav)();
      return r;
    };
  });
  w.addEventListener('popstate', safe(nav));
  new MutationObserver(
    safe((records) => {
      if (ready)
        for (const r of records)
        for (const n of r.addedNodes)
          if (n.querySelectorAll)
            for (const el of [n, ...n.querySelectorAll(SLOT)])
              if (el.matches(SLOT) && !known.has(el)) {
                known.add(el);
                el.setAttribute(P, '');
                fresh.push(el);
                later();
              }
    }),
  ).observe(html, { childList: true, subtree: true });

  d.addEventListener('click', safe((e) => feedback('click', e.target.closest(SLOT))), true);
  d.addEventListener('visibilitychange', () => d.hidden && flush(1));
  w.addEventListener('pagehide', flush); // (the event is truthy: hidden)

  const api = {
    push: (...commands) => commands.map(safe((c) => api[c[0]](...c.slice(1)))),
    decide: () => decide(),
    onDecision: (cb) => {
      listeners.push(cb);
      if (last) safe(cb)(last, lastApplied);
    },
    setConsent: (c) => setConsent(!!c.personalization, !!c.storage),
    track: (type, props) => track(type, props || {}),
    identify: (userId, userToken) => {
      user = ok(ID, userId) ? { userId, userToken: ok(ID, userToken) ? userToken : undefined } : {};
    },
    // Rarely called: in a module of its own, next to this script (null when it cannot load).
    myData: () =>
      import(new URL('tailor-me.js', script.src)).then((m) => m.myData(send, state, last, log), () => null),
    forget: () => {
      const erased = Promise.resolve(!state.tok || send('me/forget').then((r) => r.ok, log));
      KEYS.map(safe((k) => localStorage.removeItem('tailor.' + k)));
      // Nothing of before is sent any more: not the queue, nor the filled slots' impressions.
      state = blank();
      last = undefined;
      events.length = 0;
      filled = new WeakMap();
      return erased.then(Boolean);
    },
  };
  for (const k in api) api[k] = safe(api[k]);
  api.version = __VERSION__;
  w.tailor = api;
  api.push(...(queued || [])); // the commands queued before the tag loaded

  // The first page view, once the page is parsed; the MutationObserver waits for it.
  const run = safe(() => view((ready = 1)));
  if (d.readyState == 'loading') d.addEventListener('DOMContentLoaded', run);
  else run();
}

try {
  start();
} catch (e) {
  reveal(log(e));
}
