"""``python -m dcgd app``: remove objects by painting over them, in a browser or over HTTP.

One FastAPI server holds one loaded model and serves both a page of its own
(``static/index.html``: brush, undo, compare, download) and the HTTP API the page itself
uses (``POST /api/remove``, ``GET /api/model``, ``GET /api/health``; documented at ``/docs``).

Why FastAPI and a small page rather than Gradio (the field's demo convention):

- offline: the page is one file of HTML, CSS and JavaScript shipped in the package; nothing
  is fetched from a CDN and nothing phones home (Gradio loads fonts and front-end assets
  and has analytics to switch off);
- small: a few hundred lines we can read, against a large framework with its own front end
  and release cadence;
- one server: the page is just another client of the documented API, so what a script does
  with ``curl`` is exactly what the page does;
- testable: the API is tested against a real server and the page in a real headless Chromium
  (``tests/app``), without a framework's own test harness.

Modules: :mod:`dcgd.app.server` (the app factory and routes), :mod:`dcgd.app.uploads`
(multipart input checked into arrays and settings), :mod:`dcgd.app.queue` (one job at a time
on the model, with progress), :mod:`dcgd.app.docs` (the offline API page).
"""
