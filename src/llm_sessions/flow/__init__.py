"""The routing flow, by its steps; `SessionPolicy` (`llm_sessions.policy`) is its facade.

- `decision`: what passes between the steps (`Turn`, `Begun`) and what `begin` returns
  (`Decision`), with its ``X-Session-*`` headers;
- `reading`: a request read once into the `Turn` the rules see;
- `chains`: links of stored responses and conversations to their session and holder;
- `begin`: rules 2-7 as plain functions over the session's record;
- `finish`: charging (usage priced, else the estimate) and the finish and release steps;
- `events`: each turn's event, as the session's event log keeps it;
- `shell`: each step run against a store, once for sync and once for async, with the
  retries and what a store failure means.
"""

from ..routing import usage_field, usage_int
from .decision import REASONS, Decision, entry_of, new_reservation_id, response_headers
from .reading import declared_cache_ttls

__all__ = [
    "REASONS",
    "Decision",
    "declared_cache_ttls",
    "entry_of",
    "new_reservation_id",
    "response_headers",
    "usage_field",
    "usage_int",
]
