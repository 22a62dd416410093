# Reliability: fault injection, stress, fuzz (rules added by that work).
