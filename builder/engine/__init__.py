"""Container engines: the interface, the classic Docker and BuildKit implementations, the factory that connects one and the loopback site server; imports render, profile, errors and safety only."""
