// The gift card demo page. The server pushes giftcard_summary over Server-Sent Events (one
// "giftcards" event carrying the whole summary each time the projection commits a change); the
// page renders each one in place. The forms send commands to POST /api/commands/<Type> and show
// the reply, rejections included, under the form. No polling, no framework, no build step.
'use strict';

(function () {
  const tbody = document.querySelector('#cards tbody');
  const rows = new Map(); // card_id -> { tr, key }
  let rendered = false;    // a summary was shown (the stream's or the first fetch's)
  let firstRender = true;  // rows of the first summary do not flash

  function setStatus(state, text) {
    const badge = document.getElementById('live-status');
    badge.dataset.state = state;
    badge.className = 'status status-' + state;
    badge.textContent = text;
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return isNaN(date) ? iso : date.toLocaleString();
  }

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function fillRow(tr, card) {
    const badge = document.createElement('span');
    badge.className = 'badge badge-' + card.status;
    badge.textContent = card.status;
    const status = document.createElement('td');
    status.appendChild(badge);
    tr.replaceChildren(cell(card.card_id), cell(String(card.initial_value), 'num'),
                       cell(String(card.remaining_value), 'num'), status,
                       cell(formatTime(card.issued_at)));
    tr.dataset.cardId = card.card_id;
    tr.dataset.status = card.status;
    tr.dataset.remaining = String(card.remaining_value);
  }

  // Replaces the table's rows with the summary's, reusing unchanged rows and flashing changed ones.
  function render(summary) {
    document.getElementById('total-cards').textContent = String(summary.totals.cards);
    document.getElementById('total-outstanding').textContent = String(summary.totals.outstanding);
    const ordered = [];
    const present = new Set();
    for (const card of summary.cards) {
      const key = JSON.stringify([card.initial_value, card.remaining_value, card.status,
                                  card.issued_at]);
      let entry = rows.get(card.card_id);
      if (!entry) {
        entry = { tr: document.createElement('tr'), key: null };
        rows.set(card.card_id, entry);
      }
      if (entry.key !== key) {
        fillRow(entry.tr, card);
        entry.key = key;
        if (!firstRender) {
          entry.tr.classList.remove('changed');
          void entry.tr.offsetWidth; // restarts the animation
          entry.tr.classList.add('changed');
        }
      }
      ordered.push(entry.tr);
      present.add(card.card_id);
    }
    for (const id of Array.from(rows.keys())) {
      if (!present.has(id)) rows.delete(id);
    }
    firstRender = false;
    tbody.replaceChildren(...ordered);
    document.getElementById('empty').hidden = summary.cards.length > 0;
    document.getElementById('truncated').hidden = !summary.truncated;
    rendered = true;
  }

  function connect() {
    const source = new EventSource('/api/giftcards/events');
    source.addEventListener('giftcards', (event) => {
      render(JSON.parse(event.data));
      setStatus('live', 'live');
    });
    source.onopen = () => setStatus('live', 'live');
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (cqrsd stopping, or too many streams): try again a little later.
        setStatus('down', 'disconnected');
        setTimeout(connect, 5000);
      } else {
        setStatus('connecting', 'reconnecting…');
      }
    };
  }

  function describe(reply) {
    if (reply.status === 'ok') {
      const events = (reply.events || []).map((e) => (typeof e === 'string' ? e : e.type));
      return 'ok: ' + (events.length ? events.join(', ') : 'no events') +
             (reply.version !== undefined ? ' (version ' + reply.version + ')' : '');
    }
    return (reply.error || reply.status) + ': ' + (reply.message || '');
  }

  async function send(form) {
    const result = form.querySelector('.result');
    const button = form.querySelector('button');
    const payload = {};
    for (const input of form.querySelectorAll('input')) {
      payload[input.name] = input.type === 'number' ? Number(input.value) : input.value.trim();
    }
    button.disabled = true;
    delete result.dataset.status;
    delete result.dataset.error;
    result.className = 'result';
    result.textContent = '…';
    try {
      const response = await fetch('/api/commands/' + form.dataset.command, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(payload),
      });
      const reply = await response.json();
      result.className = 'result ' + (reply.status || 'error');
      result.dataset.status = reply.status || 'error';
      result.dataset.error = reply.error || '';
      result.textContent = describe(reply);
    } catch (error) {
      result.className = 'result error';
      result.dataset.status = 'error';
      result.textContent = 'error: cqrsd did not answer (' + error.message + ')';
    } finally {
      button.disabled = false;
    }
  }

  for (const form of document.querySelectorAll('form[data-command]')) {
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      send(form);
    });
  }
  tbody.addEventListener('click', (event) => {
    const tr = event.target.closest('tr');
    if (!tr) return;
    for (const input of document.querySelectorAll('input[name="card_id"]')) {
      input.value = tr.dataset.cardId;
    }
  });

  connect();
  // The stream starts with the current summary; this only covers a stream that is slow to open.
  fetch('/api/giftcards')
    .then((response) => (response.ok ? response.json() : null))
    .then((summary) => { if (summary && !rendered) render(summary); })
    .catch(() => {});
})();
