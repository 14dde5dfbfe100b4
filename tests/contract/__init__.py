"""A contract suite for agent handoff (issue 10), written from the documents only.

Its sources are `../shared/DESIGN.md` ("The contract": the widget REST API, the websocket frames
and "Agents"), the README's "Handoff to a person" and "The contract, and how this implementation
extends it", and the issue itself; none of the implementation (agents/, conversations/, inference/,
knowledge/, static/, templates/) or its tests was read to write it. `client.py` is a small
independent client (httpx and the `websockets` package) for the customer's widget API and the
agent API; `test_agent_contract.py` drives it end to end against daphne started through the
production entry point (`python -m cs_platform.serve_web`) on real PostgreSQL and Redis, with
replies generated in-process against a scripted OpenAI-compatible server.

Where the documents leave a detail open (the field that carries the CSRF token, the body of a claim,
the exact name shown for an agent), the tests accept any reading the documents allow and say so.
"""
