// ktrack report: tabs, sortable tables, the metric switch, point tooltips and (under
// `ktrack ui`) the live status. Errors are kept on <html data-errors> for the browser tests.
(function () {
  'use strict';
  var root = document.documentElement;
  var errors = [];
  window.addEventListener('error', function (e) {
    errors.push(String(e.message));
    root.setAttribute('data-errors', errors.join(' | '));
  });

  function show() {
    var want = (location.hash || '#status').slice(1);
    // A run may be named by any prefix of its id (#run-443330864fbe).
    var target = document.getElementById(want) ||
      (/^run-[0-9a-f]+$/.test(want) ? document.querySelector('details[id^="' + want + '"]') : null);
    var section = target && target.closest('section');
    var id = section ? section.id : 'status';
    document.querySelectorAll('section').forEach(function (s) {
      s.classList.toggle('shown', s.id === id);
    });
    document.querySelectorAll('nav a').forEach(function (a) {
      a.classList.toggle('active', a.getAttribute('href') === '#' + id);
    });
    if (target && target.tagName === 'DETAILS') {
      target.open = true;
      target.scrollIntoView();
    } else {
      // A tab: show it from the top, not scrolled to its anchor under the header.
      window.scrollTo(0, 0);
    }
  }
  document.body.classList.add('paged');
  window.addEventListener('hashchange', show);
  window.addEventListener('load', show);
  show();

  function sortKey(cell) {
    var v = cell.getAttribute('data-sort');
    if (v !== null && v !== '' && !isNaN(Number(v))) return Number(v);
    return cell.textContent.trim().toLowerCase();
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var dir = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', dir);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = sortKey(a.cells[col]), y = sortKey(b.cells[col]);
          var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
          return dir === 'asc' ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  var metric = document.getElementById('metric');
  if (metric) {
    metric.addEventListener('change', function () {
      var m = metric.value;
      document.querySelectorAll('div.table').forEach(function (d) {
        d.hidden = m === '' ? d.getAttribute('data-headline') !== 'true' : d.getAttribute('data-metric') !== m;
      });
    });
  }

  var tip = document.getElementById('tip');
  document.addEventListener('mouseover', function (e) {
    var p = e.target.closest && e.target.closest('[data-tip]');
    if (!p) { tip.hidden = true; return; }
    tip.textContent = p.getAttribute('data-tip') + (p.getAttribute('data-run') ? ' — ' + p.getAttribute('data-run') : '');
    tip.hidden = false;
  });
  document.addEventListener('mousemove', function (e) {
    tip.style.left = (e.clientX + 12) + 'px';
    tip.style.top = (e.clientY + 12) + 'px';
  });

  if (root.getAttribute('data-live') === 'true') {
    var seen = null;
    var poll = function () {
      fetch('api/status' + location.search, { cache: 'no-store' })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          var counts = Object.keys(s.counts).map(function (k) { return s.counts[k] + ' ' + k; });
          document.getElementById('status-counts').textContent = s.runs.length + ' runs: ' + counts.join(', ');
          s.runs.forEach(function (r) {
            var row = document.querySelector('#runs-table tr[data-run="' + r.id + '"]');
            if (row) {
              row.querySelector('td.status').textContent = r.status;
              row.cells[4].textContent = r.headline;
              row.querySelector('td.error').textContent = r.error || '';
            }
          });
          var key = JSON.stringify(s.counts);
          if (seen !== null && key !== seen) {
            var note = document.getElementById('live-note');
            note.textContent = 'Runs have changed since this page was made: reload it for new tables and figures.';
            note.hidden = false;
          }
          if (seen === null) seen = key;
        })
        .catch(function () {});
    };
    setInterval(poll, 5000);
  }
  root.setAttribute('data-ready', 'true');
})();
