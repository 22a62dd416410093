# man: rules added by the man work.
