"""The pure domain core: decisions only, no I/O."""
