"""Loss terms as Keras layers and losses, and the composition wrapper (see docs/losses.md)."""
