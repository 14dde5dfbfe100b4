"""Safety of what the assistant says: blocked terms stopped as a reply streams, and a disclaimer."""
