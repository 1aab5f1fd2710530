"""Test support shared across test packages: loopback servers and the Apprise inbox."""
