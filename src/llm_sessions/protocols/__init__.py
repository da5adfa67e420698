"""The wire protocols the gateway speaks, one pure module each (no I/O).

Each turns its request body into the routing flow's *view*: one normalized request in
the shape of a Chat Completions body (``messages`` of ``role`` and ``content``, tool calls
as ``tool_calls``, tool results as ``tool`` messages, media as typed parts, any
``cache_control`` kept where it was declared), so every rule of the flow (classification,
the budget's worst case, cache stickiness, the loop fingerprint, the session id sources)
is defined once for all of them. Each also reads its usage, from a body or from stream
events, and shapes its errors.

Translation between them goes through one neutral form (`neutral`): each API's requests,
answers and stream events are read into it and written from it by its ``*_neutral``
module, so a request of one API can be served by an upstream of another.
"""
