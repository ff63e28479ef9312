"""faceproof's domain core: the rules, as pure code (no I/O). Imports only ``contracts``."""
