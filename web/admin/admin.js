// The Comet admin console (docs/protocol.md "Admin console"). Plain JavaScript, no build step:
// served from the binary at /admin/admin.js. Every data call carries the admin API key as
// `Authorization: Bearer`; the key lives in sessionStorage (this tab only), never in a URL.
// Everything the server sends is shown with textContent, never parsed as HTML.
'use strict';

(() => {
  const STORE = 'comet.admin.key';
  const POLL_MS = 2000;
  const WINDOW_MS = 15 * 60 * 1000; // the charts' span, as the server keeps samples
  const CHANNELS_PAGE = 10;
  const HISTORY_PAGE = 10;
  const TAIL_MAX = 100;

  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem(STORE);
  let timer = null;

  /** Makes an element with `text` (as text) and classes. */
  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  class SignedOut extends Error {}

  /** A call to the server with the key; JSON back, or an Error with the server's message. */
  async function api(path, { method = 'GET', body, signal } = {}) {
    if (!key) throw new SignedOut('signed out');
    const res = await fetch(path, { method, body, signal, cache: 'no-store', headers: { authorization: `Bearer ${key}` } });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (res.status === 401) {
      signOut('The server refused this key.');
      throw new SignedOut('unauthorized');
    }
    if (!res.ok) {
      const err = new Error(json?.error?.message ?? `HTTP ${res.status}`);
      err.code = json?.error?.code;
      throw err;
    }
    return json;
  }

  const enc = encodeURIComponent;

  // ---- formatting --------------------------------------------------------------------------
  function ago(ms) {
    if (ms === null || ms === undefined) return '—';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(ms).toLocaleString();
  }
  function duration(secs) {
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${secs % 60} s`;
    return `${secs} s`;
  }
  function num(n) {
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
    if (n >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }
  function setStatus(text, bad) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('bad', !!bad);
  }

  // ---- sign-in -----------------------------------------------------------------------------
  function showSignIn(message) {
    $('console').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message ?? '';
    $('key').focus();
  }

  function signOut(message) {
    key = null;
    sessionStorage.removeItem(STORE);
    clearInterval(timer);
    timer = null;
    tail.stop();
    showSignIn(message);
  }

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    key = $('key').value.trim();
    $('signin-error').textContent = '';
    try {
      await api('/admin/nodes');
    } catch (err) {
      if (!(err instanceof SignedOut)) $('signin-error').textContent = `Cannot reach the server: ${err.message}`;
      return;
    }
    sessionStorage.setItem(STORE, key);
    $('key').value = '';
    start();
  });
  $('signout').addEventListener('click', () => signOut(''));

  // ---- nodes -------------------------------------------------------------------------------
  /** node id → {info, samples} */
  const nodes = new Map();

  /** The samples' rate of `field` per second between consecutive samples. */
  function rates(samples, field) {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i].time - samples[i - 1].time) / 1000;
      if (dt > 0) out.push([samples[i].time, Math.max(0, samples[i][field] - samples[i - 1][field]) / dt]);
    }
    return out;
  }
  const total = (conns) => Object.values(conns ?? {}).reduce((a, b) => a + b, 0);

  /** A small SVG chart of `points` ([time, value]) over the `span` ms up to `end`. */
  function sparkline(points, end, span, label) {
    const NS = 'http://www.w3.org/2000/svg';
    const W = 200;
    const H = 40;
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('role', 'img');
    const shown = points.filter((p) => p[0] >= end - span);
    const max = Math.max(1, ...shown.map((p) => p[1]));
    const title = document.createElementNS(NS, 'title');
    title.textContent = `${label}, last ${duration(Math.round(span / 1000))} (peak ${num(max)})`;
    svg.append(title);
    svg.setAttribute('aria-label', title.textContent);
    const xy = shown.map((p) => `${(((p[0] - (end - span)) / span) * W).toFixed(1)},${(H - 2 - (p[1] / max) * (H - 4)).toFixed(1)}`);
    if (xy.length > 1) {
      const area = document.createElementNS(NS, 'polygon');
      const first = xy[0].split(',')[0];
      const last = xy[xy.length - 1].split(',')[0];
      area.setAttribute('points', `${first},${H} ${xy.join(' ')} ${last},${H}`);
      area.setAttribute('class', 'area');
      const line = document.createElementNS(NS, 'polyline');
      line.setAttribute('points', xy.join(' '));
      line.setAttribute('class', 'line');
      svg.append(area, line);
    }
    return svg;
  }

  function stat(label, value, detail) {
    const d = el('div', null, 'stat');
    d.append(el('span', label, 'label'), el('span', value, 'value'));
    if (detail) d.append(el('span', detail, 'detail'));
    return d;
  }

  function chart(label, value, points, end, span) {
    const d = el('figure', null, 'chart');
    const cap = el('figcaption');
    cap.append(el('span', label, 'label'), el('span', value, 'value'));
    d.append(cap, sparkline(points, end, span, label));
    return d;
  }

  function renderNodes(me) {
    const box = $('nodes');
    box.replaceChildren();
    $('nodes-count').textContent = nodes.size === 1 ? '1 node' : `${nodes.size} nodes`;
    for (const [id, { info, samples }] of nodes) {
      const card = el('article', null, 'node');
      card.dataset.node = id;
      const last = samples[samples.length - 1] ?? {};
      const end = last.time ?? Date.now();
      const head = el('div', null, 'node-head');
      head.append(el('strong', id, 'mono'));
      if (id === me) head.append(el('span', 'this node', 'badge'));
      head.append(el('span', info.live ? 'live' : 'not heard from', info.live ? 'badge ok' : 'badge bad'));
      head.append(el('span', `v${info.version} · up ${duration(info.uptime_secs)}`, 'muted'));
      const first = samples.find((s) => s.time >= end - WINDOW_MS) ?? last;
      // The charts span what is known, from 10 s (a node just started) up to 15 minutes.
      const span = Math.min(WINDOW_MS, Math.max(10000, end - (first.time ?? end)));
      const conns = last.connections ?? {};
      const byTransport = Object.entries(conns)
        .filter(([, n]) => n > 0)
        .map(([t, n]) => `${t} ${n}`)
        .join(' · ');
      const pub = rates(samples, 'published');
      const del = rates(samples, 'delivered');
      const stats = el('div', null, 'stats');
      stats.append(
        stat('Gaps', num(last.gaps ?? 0), `+${num((last.gaps ?? 0) - (first.gaps ?? 0))} in 15 min`),
        stat('Lagged', num(last.lagged ?? 0), `+${num((last.lagged ?? 0) - (first.lagged ?? 0))} in 15 min`),
        stat('Limit refusals', num(last.limit_refusals ?? 0), `+${num((last.limit_refusals ?? 0) - (first.limit_refusals ?? 0))} in 15 min`),
        stat('TCP connections', num(last.tcp_connections ?? 0), last.connections_refused ? `${num(last.connections_refused)} refused` : ''),
      );
      const charts = el('div', null, 'charts');
      charts.append(
        chart('Connections', num(total(conns)), samples.map((s) => [s.time, total(s.connections)]), end, span),
        chart('Subscribers', num(last.subscribers ?? 0), samples.map((s) => [s.time, s.subscribers]), end, span),
        chart('Published/s', num(pub.length ? pub[pub.length - 1][1] : 0), pub, end, span),
        chart('Delivered/s', num(del.length ? del[del.length - 1][1] : 0), del, end, span),
      );
      const about = `${byTransport ? `by transport: ${byTransport}` : 'no connection open'} · charts: last ${duration(Math.round(span / 1000))}`;
      card.append(head, el('p', about, 'muted transports'), charts, stats);
      box.append(card);
    }
  }

  async function pollNodes() {
    // Only what is new: after the oldest "latest sample" among the known nodes (their clocks
    // may differ), de-duplicated by time per node below.
    const lasts = [...nodes.values()].map((n) => n.samples[n.samples.length - 1]?.time ?? 0);
    const since = lasts.length ? Math.min(...lasts) : null;
    const body = await api('/admin/nodes' + (since ? `?since=${since}` : ''));
    const seen = new Set();
    for (const n of body.nodes) {
      seen.add(n.node);
      const known = nodes.get(n.node) ?? { info: n, samples: [] };
      known.info = n;
      const lastTime = known.samples[known.samples.length - 1]?.time ?? 0;
      for (const s of n.samples) if (s.time > lastTime) known.samples.push(s);
      const cut = (known.samples[known.samples.length - 1]?.time ?? 0) - WINDOW_MS;
      while (known.samples.length && known.samples[0].time < cut) known.samples.shift();
      nodes.set(n.node, known);
    }
    for (const id of [...nodes.keys()]) if (!seen.has(id)) nodes.delete(id);
    renderNodes(body.node);
  }

  // ---- channels ----------------------------------------------------------------------------
  const list = { prefix: '', afters: [null], page: 0, next: null };

  async function pollChannels() {
    const q = new URLSearchParams({ limit: String(CHANNELS_PAGE), info: 'true' });
    if (list.prefix) q.set('prefix', list.prefix);
    const after = list.afters[list.page];
    if (after) q.set('after', after);
    const asked = q.toString();
    const body = await api(`/channels?${asked}`);
    const tbody = $('channels').tBodies[0];
    tbody.replaceChildren();
    for (const c of body.channels) {
      const tr = el('tr');
      tr.dataset.channel = c.channel;
      if (c.channel === current.channel) tr.classList.add('selected');
      const name = el('td');
      const link = el('button', c.channel, 'link mono');
      link.type = 'button';
      link.addEventListener('click', () => openChannel(c.channel));
      name.append(link);
      const last = el('td', ago(c.last_time));
      if (c.last_time) last.title = new Date(c.last_time).toLocaleString();
      tr.append(name, el('td', c.subscribers, 'num'), el('td', c.history_len ?? '—', 'num'), last);
      tbody.append(tr);
    }
    $('channels-empty').hidden = body.channels.length > 0;
    list.next = body.next;
    $('channels-prev').disabled = list.page === 0;
    $('channels-next').disabled = !body.next;
    $('channels-page').textContent = `page ${list.page + 1}`;
  }

  let searchTimer = null;
  $('channel-search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      list.prefix = $('channel-search').value.trim();
      list.afters = [null];
      list.page = 0;
      pollChannels().catch(report);
    }, 250);
  });
  $('channels-next').addEventListener('click', () => {
    if (!list.next) return;
    list.afters[list.page + 1] = list.next;
    list.page += 1;
    pollChannels().catch(report);
  });
  $('channels-prev').addEventListener('click', () => {
    if (list.page === 0) return;
    list.page -= 1;
    pollChannels().catch(report);
  });

  // ---- one channel -------------------------------------------------------------------------
  const current = { channel: null, presence: false, history: [null], historyPage: 0, historyNext: null };

  function openChannel(name) {
    if (!name) return;
    current.channel = name;
    current.history = [null];
    current.historyPage = 0;
    if (location.hash !== `#channel=${enc(name)}`) history.replaceState(null, '', `#channel=${enc(name)}`);
    $('channel-title').textContent = name;
    $('channel-hint').hidden = true;
    $('channel-detail').hidden = false;
    $('tail').replaceChildren();
    $('publish-result').textContent = '';
    for (const tr of $('channels').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.channel === name);
    tail.start(name);
    pollChannel().catch(report);
    loadHistory().catch(report);
  }

  async function pollChannel() {
    const name = current.channel;
    if (!name) return;
    const info = await api(`/channels/${enc(name)}`);
    if (name !== current.channel) return;
    const dl = $('channel-info');
    dl.replaceChildren();
    const fact = (k, v) => dl.append(el('dt', k), el('dd', v));
    fact('Subscribers', info.subscribers);
    fact('History', `${info.history_len} messages`);
    fact('Last id', info.last_id ?? '—');
    current.presence = info.users !== undefined;
    if (current.presence) fact('Users', info.users);
    await loadPresence();
  }

  async function loadPresence() {
    const box = $('presence');
    if (!current.presence) {
      box.replaceChildren(el('p', 'Presence is off in this channel\u2019s namespace.', 'muted'));
      return;
    }
    const name = current.channel;
    const body = await api(`/admin/channels/${enc(name)}/presence`);
    if (name !== current.channel) return;
    if (!body.clients.length) {
      box.replaceChildren(el('p', 'Nobody is here.', 'muted'));
      return;
    }
    const table = el('table');
    const head = el('tr');
    for (const h of ['User', 'Client', 'Transport', 'Since']) head.append(el('th', h));
    table.append(el('thead'), el('tbody'));
    table.tHead.append(head);
    for (const c of body.clients) {
      const tr = el('tr');
      tr.append(el('td', c.user || '(anonymous)'), el('td', c.client, 'mono'), el('td', c.transport), el('td', ago(c.since)));
      table.tBodies[0].append(tr);
    }
    box.replaceChildren(table);
  }

  function messageItem(m) {
    const li = el('li');
    li.dataset.id = m.id;
    const meta = el('div', null, 'meta');
    meta.append(el('span', new Date(m.time).toLocaleTimeString(), 'time'), el('span', m.id, 'mono id'));
    if (m.event && m.event !== 'message') meta.append(el('span', m.event, 'badge'));
    const data = String(m.data);
    li.append(meta, el('pre', data.length > 500 ? data.slice(0, 500) + '…' : data, 'data'));
    return li;
  }

  async function loadHistory() {
    const name = current.channel;
    const q = new URLSearchParams({ reverse: 'true', limit: String(HISTORY_PAGE) });
    const since = current.history[current.historyPage];
    if (since) q.set('since', since);
    const body = await api(`/channels/${enc(name)}/history?${q}`);
    if (name !== current.channel) return;
    const ol = $('history');
    ol.replaceChildren(...body.messages.map(messageItem));
    if (!body.messages.length) ol.append(el('li', 'History holds no message here.', 'muted empty'));
    if (body.gap) ol.append(el('li', 'History no longer reaches further back.', 'muted empty'));
    current.historyNext = body.next;
    $('history-older').disabled = !body.next;
    $('history-newer').disabled = current.historyPage === 0;
    $('history-page').textContent = `page ${current.historyPage + 1}, newest first`;
  }

  $('history-older').addEventListener('click', () => {
    if (!current.historyNext) return;
    current.history[current.historyPage + 1] = current.historyNext;
    current.historyPage += 1;
    loadHistory().catch(report);
  });
  $('history-newer').addEventListener('click', () => {
    if (current.historyPage === 0) return;
    current.historyPage -= 1;
    loadHistory().catch(report);
  });
  $('history-newest').addEventListener('click', () => {
    current.historyPage = 0;
    loadHistory().catch(report);
  });

  $('open-form').addEventListener('submit', (e) => {
    e.preventDefault();
    openChannel($('open-channel').value.trim());
    $('open-channel').value = '';
  });

  // The live tail: GET /admin/channels/{channel}/tail, an NDJSON stream read with fetch (the key
  // goes in a header, which EventSource cannot send); it resumes from its last cursor.
  const tail = {
    abort: null,
    cursor: null,
    retry: null,
    stop() {
      clearTimeout(this.retry);
      this.abort?.abort();
      this.abort = null;
    },
    start(name) {
      this.stop();
      this.cursor = null;
      this.run(name);
    },
    async run(name) {
      const ctl = new AbortController();
      this.abort = ctl;
      const state = (t) => {
        if (this.abort === ctl) $('tail-state').textContent = t;
      };
      state('connecting…');
      try {
        const q = this.cursor ? `?since=${enc(this.cursor)}` : '';
        const res = await fetch(`/admin/channels/${enc(name)}/tail${q}`, {
          signal: ctl.signal,
          cache: 'no-store',
          headers: { authorization: `Bearer ${key}` },
        });
        if (res.status === 401) return signOut('The server refused this key.');
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        state('live');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line) this.line(JSON.parse(line));
          }
        }
      } catch (err) {
        if (ctl.signal.aborted) return;
        state(`reconnecting (${err.message})`);
      }
      if (this.abort !== ctl) return;
      state('reconnecting…');
      this.retry = setTimeout(() => this.abort === ctl && this.run(name), 1000);
    },
    line(obj) {
      const ol = $('tail');
      if (obj.type === 'reconnect') {
        this.cursor = obj.cursor;
        return;
      }
      if (obj.type === 'gap') {
        ol.prepend(el('li', 'Gap: history no longer reaches where the tail was.', 'muted empty'));
        return;
      }
      if (obj.type) return; // presence and other notices
      this.cursor = obj.id;
      const li = messageItem(obj);
      li.classList.add('fresh');
      ol.prepend(li);
      while (ol.children.length > TAIL_MAX) ol.lastElementChild.remove();
    },
  };

  $('publish-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const out = $('publish-result');
    const event = $('publish-event').value.trim();
    out.textContent = 'publishing…';
    out.classList.remove('bad');
    try {
      const q = event ? `?event=${enc(event)}` : '';
      const r = await api(`/admin/channels/${enc(current.channel)}/publish${q}`, { method: 'POST', body: $('publish-data').value });
      out.textContent = `published ${r.id}`;
      loadHistory().catch(report);
    } catch (err) {
      if (err instanceof SignedOut) return;
      out.textContent = err.message;
      out.classList.add('bad');
    }
  });

  // ---- users -------------------------------------------------------------------------------
  $('disconnect-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const user = $('disconnect-user').value.trim();
    const out = $('disconnect-result');
    out.classList.remove('bad');
    try {
      const body = JSON.stringify({ reconnect: $('disconnect-reconnect').checked });
      const r = await api(`/admin/users/${enc(user)}/disconnect`, { method: 'POST', body });
      out.textContent = `${r.user}: ${r.connections} connection${r.connections === 1 ? '' : 's'} on this node disconnected; every other node was told.`;
    } catch (err) {
      if (err instanceof SignedOut) return;
      out.textContent = err.message;
      out.classList.add('bad');
    }
  });

  // ---- the loop ----------------------------------------------------------------------------
  function report(err) {
    if (err instanceof SignedOut) return;
    setStatus(`server: ${err.message}`, true);
  }

  let busy = false;
  async function tick() {
    if (busy || !key) return;
    busy = true;
    try {
      await Promise.all([pollNodes(), pollChannels(), pollChannel()]);
      setStatus(`updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      report(err);
    } finally {
      busy = false;
    }
  }

  function start() {
    $('signin').hidden = true;
    $('console').hidden = false;
    clearInterval(timer);
    timer = setInterval(tick, POLL_MS);
    tick();
    const m = /^#channel=(.+)$/.exec(location.hash);
    if (m) openChannel(decodeURIComponent(m[1]));
  }

  if (key) start();
  else showSignIn();
})();
