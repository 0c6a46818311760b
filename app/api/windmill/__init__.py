"""The part of Windmill's API that the official `wmill` Python client calls, with Windmill's
paths, field names and answers, so that `wmill` works unchanged against Flowmill: inside a
script (with the WM_* environment of its run) and from any machine with WM_BASE_URL,
WM_TOKEN and WM_WORKSPACE set.

Modules: `jobs` (runs, results, cancel, progress), `items` (variables, resources and so
state, flow user state), `approvals` (resume URLs, and a workflow approval's by step key),
`workflows` (the inline checkpoint of `wmill.step`), `users` (whoami, tokens, version);
`routes` mounts them. Handlers are thin: the work is the native services'.

Flows run by path (`jobs/run/f/<namespace>/<name>`, `wmill.run_flow_async`). Not there
(answered plainly, never faked): suspending a
run for an approval (the resume URLs answer 409), a retry policy per run (400).
"""

from app.api.windmill.routes import windmill_routers

__all__ = ["windmill_routers"]
