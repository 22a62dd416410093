# Ecosystem checks: symbols, man pages, versions, install (rules added by that work).
