"""Background work: the rotation loop, CRL refresh and the outbox relay to NATS."""
